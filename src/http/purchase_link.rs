//! `CREDITS_PURCHASE_URL` in answers that say "buy credits": a `purchase_url` beside the code, and the link at
//! the end of the message, for programs and people alike. Added here, on the way out, so the errors and the
//! routing rules that produce them stay free of configuration.

use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use serde_json::Value;

use super::error::ErrorCode;
use crate::domain::error_code::Code;

/// Where users buy credits; `None` when the operator has no checkout.
#[derive(Debug, Clone, Default)]
pub struct PurchaseLink(pub Option<Arc<str>>);

/// The refusals a purchase would lift.
const CREDIT_REFUSALS: [Code; 2] = [Code::InsufficientCredits, Code::NoCreditsOrKey];
/// An error body is a few hundred bytes; anything larger is not one of ours and passes untouched.
const MAX_ERROR_BODY: usize = 16 * 1024;

pub async fn add(State(link): State<PurchaseLink>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let Some(url) = link.0 else { return response };
    let refused_for_credit = response
        .extensions()
        .get::<ErrorCode>()
        .is_some_and(|code| CREDIT_REFUSALS.iter().any(|refusal| refusal.as_str() == code.0));
    if !refused_for_credit {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_ERROR_BODY).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let Ok(mut document) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    if let Some(error) = document.get_mut("error").and_then(Value::as_object_mut) {
        let message = error.get("message").and_then(Value::as_str).unwrap_or_default().to_owned();
        error.insert("message".into(), Value::from(format!("{message} Buy credits: {url}")));
        error.insert("purchase_url".into(), Value::from(url.as_ref()));
    }
    let body = serde_json::to_vec(&document).unwrap_or_else(|_| bytes.to_vec());
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}
