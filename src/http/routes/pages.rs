//! The account page (`web/account/`): plain HTML, CSS and JavaScript compiled into the binary, so there is
//! nothing to deploy beside it and nothing a request can choose from the file system.
//!
//! Served under a strict Content-Security-Policy: scripts and styles only from these files, requests only to
//! this origin, framed only by this origin and the operator's `ACCOUNT_EMBED_ORIGINS`.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use std::sync::Arc;

use crate::domain::error_code::Code;
use crate::http::error::{ApiError, ErrorBody};

const INDEX_HTML: &str = include_str!("../../../web/account/index.html");
/// The page's scripts: ES modules, one per section of the page; `account.js` is the entry the page loads.
const SCRIPTS: [(&str, &str); 10] = [
    ("account.js", include_str!("../../../web/account/account.js")),
    ("activity.js", include_str!("../../../web/account/activity.js")),
    ("api.js", include_str!("../../../web/account/api.js")),
    ("budget.js", include_str!("../../../web/account/budget.js")),
    ("dom.js", include_str!("../../../web/account/dom.js")),
    ("format.js", include_str!("../../../web/account/format.js")),
    ("keys.js", include_str!("../../../web/account/keys.js")),
    ("notifications.js", include_str!("../../../web/account/notifications.js")),
    ("status.js", include_str!("../../../web/account/status.js")),
    ("usage.js", include_str!("../../../web/account/usage.js")),
];
const STYLE: &str = include_str!("../../../web/account/account.css");

/// The tag the page reads its allowed embedding origins from; filled in once at startup.
const ORIGINS_META: &str = r#"<meta name="byok-allowed-origins" content="">"#;

/// The account page as served: the HTML with the embedding origins filled in, and its policy; built once.
pub struct AccountPage {
    html: String,
    csp: String,
}

impl AccountPage {
    /// `embed_origins` may frame the page and hand it a token (already validated as origins).
    pub fn new(embed_origins: &[String]) -> Self {
        AccountPage { html: index_html(embed_origins), csp: content_security_policy(embed_origins) }
    }
}

/// The page with the origins allowed to embed it and hand it a token (already validated as origins).
fn index_html(embed_origins: &[String]) -> String {
    INDEX_HTML.replacen(
        ORIGINS_META,
        &format!(r#"<meta name="byok-allowed-origins" content="{}">"#, embed_origins.join(" ")),
        1,
    )
}

/// The Content-Security-Policy of the page.
fn content_security_policy(embed_origins: &[String]) -> String {
    let mut ancestors = String::from("'self'");
    for origin in embed_origins {
        ancestors.push(' ');
        ancestors.push_str(origin);
    }
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
         form-action 'self'; base-uri 'none'; object-src 'none'; frame-ancestors {ancestors}"
    )
}

fn page(page: &AccountPage, content_type: &'static str, body: String) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(csp) = HeaderValue::from_str(&page.csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The account page: keys, usage and cost, notifications, provider status.
#[utoipa::path(get, path = "/account", tag = "pages", operation_id = "account_page", responses((status = 200, content_type = "text/html", body = String)))]
pub async fn account(State(account): State<Arc<AccountPage>>) -> Response {
    page(&account, "text/html; charset=utf-8", account.html.clone())
}

/// One of the page's scripts, by file name; anything else is a 404.
#[utoipa::path(get, path = "/account/{script}", tag = "pages", operation_id = "account_page_script",
    params(("script" = String, Path, description = "`account.js` (the entry) or a module it imports")),
    responses((status = 200, content_type = "text/javascript", body = String), (status = 404, body = ErrorBody)))]
pub async fn script(State(account): State<Arc<AccountPage>>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let (_, source) = SCRIPTS.iter().find(|(file, _)| *file == name).ok_or(ApiError::from(Code::NotFound))?;
    Ok(page(&account, "text/javascript; charset=utf-8", (*source).to_owned()))
}

#[utoipa::path(get, path = "/account/account.css", tag = "pages", operation_id = "account_page_style",
    responses((status = 200, content_type = "text/css", body = String)))]
pub async fn style(State(account): State<Arc<AccountPage>>) -> Response {
    page(&account, "text/css; charset=utf-8", STYLE.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_carries_the_embedding_origins_it_is_given_and_only_those() {
        assert!(INDEX_HTML.contains(ORIGINS_META), "index.html keeps the tag the server fills");
        let origins = ["https://app.example.com".to_owned()];
        assert!(index_html(&origins).contains(r#"content="https://app.example.com""#));
        assert!(content_security_policy(&origins).ends_with("frame-ancestors 'self' https://app.example.com"));
        assert!(content_security_policy(&[]).contains("script-src 'self';"));
        assert!(!content_security_policy(&[]).contains("unsafe"));
    }
}
