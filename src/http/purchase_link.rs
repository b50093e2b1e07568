//! `CREDITS_PURCHASE_URL` in answers that say "buy credits": a `purchase_url` beside the code, and the link at
//! the end of the message, for programs and people alike. Added here, on the way out, so the errors and the
//! routing rules that produce them stay free of configuration.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::header;
use axum::response::Response;
use pin_project_lite::pin_project;
use serde_json::Value;
use tower::{Layer, Service};

use super::error::ErrorCode;
use crate::domain::error_code::Code;

/// Where users buy credits; `None` when the operator has no checkout.
#[derive(Debug, Clone, Default)]
pub struct PurchaseLink(pub Option<Arc<str>>);

/// The refusals a purchase would lift.
const CREDIT_REFUSALS: [Code; 2] = [Code::InsufficientCredits, Code::NoCreditsOrKey];
/// An error body is a few hundred bytes; anything larger is not one of ours and passes untouched.
const MAX_ERROR_BODY: usize = 16 * 1024;

impl<S> Layer<S> for PurchaseLink {
    type Service = AddPurchaseLink<S>;

    fn layer(&self, inner: S) -> AddPurchaseLink<S> {
        AddPurchaseLink { inner, link: self.clone() }
    }
}

/// Adds the link to refusals for credit. A layer of its own rather than `middleware::from_fn`, which boxes a
/// future on every request: here only the rare refusal it rewrites is boxed.
#[derive(Debug, Clone)]
pub struct AddPurchaseLink<S> {
    inner: S,
    link: PurchaseLink,
}

impl<S, B> Service<Request<B>> for AddPurchaseLink<S>
where
    S: Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Linked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        Linked::Answering { inner: self.inner.call(request), url: self.link.0.clone() }
    }
}

pin_project! {
    /// The answer, then (for a refusal for credit) its rewriting.
    #[project = LinkedProjection]
    pub enum Linked<F> {
        Answering { #[pin] inner: F, url: Option<Arc<str>> },
        Rewriting { rewrite: Pin<Box<dyn Future<Output = Response> + Send>> },
    }
}

impl<F, E> Future for Linked<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        loop {
            let rewrite = match self.as_mut().project() {
                LinkedProjection::Answering { inner, url } => {
                    let response = ready!(inner.poll(cx))?;
                    match url.take() {
                        Some(url) if refused_for_credit(&response) => Box::pin(with_link(response, url)),
                        _ => return Poll::Ready(Ok(response)),
                    }
                }
                LinkedProjection::Rewriting { rewrite } => return rewrite.as_mut().poll(cx).map(Ok),
            };
            self.set(Linked::Rewriting { rewrite });
        }
    }
}

fn refused_for_credit(response: &Response) -> bool {
    response
        .extensions()
        .get::<ErrorCode>()
        .is_some_and(|code| CREDIT_REFUSALS.iter().any(|refusal| refusal.as_str() == code.0))
}

async fn with_link(response: Response, url: Arc<str>) -> Response {
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
