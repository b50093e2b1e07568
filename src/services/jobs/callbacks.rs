//! Posts a finished job to the app's callback URL, signed the Standard Webhooks way (`webhook-id`,
//! `webhook-timestamp`, `webhook-signature`), so any Standard Webhooks library verifies it.
//!
//! The sidecar sits inside the platform's network: a callback URL must not turn it into a way to post to
//! internal services. Literal addresses are checked when the job is submitted ([`CallbackUrl::parse`]); names
//! are checked here, when they are resolved, by a resolver that drops every non-public address (so a name
//! that resolves to a private address, or is rebound to one later, is refused); no proxy is used (it would
//! resolve names itself) and redirects are not followed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::Signer;
use crate::domain::jobs::{JobRecord, JobStatus, is_public};

pub struct CallbackClient {
    /// For the apps' URLs: public addresses only, unless the operator allowed private ones.
    http: reqwest::Client,
    /// For targets the operator configured (Directus's endpoint for Flows): any address.
    trusted: reqwest::Client,
}

/// Resolves names to public addresses only.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = addrs.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err("the callback host resolves to no public address".into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

impl CallbackClient {
    pub fn new(allow_internal: bool, timeout: Duration) -> CallbackClient {
        let builder = || {
            reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout.min(Duration::from_secs(5)))
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("byok-bridge/", env!("CARGO_PKG_VERSION")))
        };
        // No proxy for the apps' URLs either: a proxy would resolve the name itself, past the resolver's check.
        let public = if allow_internal { builder() } else { builder().no_proxy().dns_resolver(Arc::new(PublicOnly)) };
        let build = |b: reqwest::ClientBuilder| b.build().expect("the callback client's settings are valid");
        CallbackClient { http: build(public), trusted: build(builder()) }
    }

    /// Posts `{"type", "timestamp", "data"}` for a finished job. `Ok` when the app answered 2xx; otherwise
    /// what went wrong, in words safe to show the job's user (no answer body, no URL).
    pub async fn deliver(&self, record: &JobRecord, signer: &Signer) -> Result<(), String> {
        let Some(callback) = &record.callback else { return Ok(()) };
        let now = OffsetDateTime::now_utc();
        let body = payload(record, signer, now).to_string();
        let secret = match signer {
            Signer::Own(secret) | Signer::Shared(secret) => secret,
        };
        // The same id on every retry: receivers deduplicate on it.
        let id = format!("msg_{}", record.id.simple());
        let signature = secret.sign(&id, now.unix_timestamp(), body.as_bytes());
        let client = if callback.trusted { &self.trusted } else { &self.http };
        let sent = client
            .post(&callback.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", now.unix_timestamp().to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("the app answered HTTP {}", response.status().as_u16())),
            Err(error) if error.is_timeout() => Err("the app did not answer in time".into()),
            Err(error) if error.is_connect() => Err("cannot connect to the callback address".into()),
            Err(_) => Err("the callback could not be sent".into()),
        }
    }
}

/// `{"type", "timestamp", "data"}`. Signed with the shared secret, `data` also names the job's user, so a
/// receiver checks that the job it knows by `data.id` is that user's: one user's callback, signed as every
/// user's are, cannot pass as another's.
fn payload(record: &JobRecord, signer: &Signer, now: OffsetDateTime) -> Value {
    let kind = match record.status {
        JobStatus::Succeeded => "job.succeeded",
        _ => "job.failed",
    };
    let mut data = record.view();
    if let Signer::Shared(_) = signer {
        data["user"] = json!(record.user);
    }
    json!({"type": kind, "timestamp": now.format(&Rfc3339).unwrap_or_default(), "data": data})
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[tokio::test]
    async fn names_resolving_only_to_internal_addresses_are_refused_at_delivery() {
        let refused = PublicOnly.resolve(Name::from_str("localhost").unwrap()).await;
        let error = refused.err().expect("localhost resolves to loopback only").to_string();
        assert!(error.contains("no public address"), "{error}");
    }

    #[tokio::test]
    async fn the_public_client_cannot_reach_a_name_that_resolves_inside() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = CallbackClient::new(false, Duration::from_secs(2));
        let sent = client.http.post(format!("http://localhost:{port}/hook")).send().await;
        assert!(sent.is_err(), "the resolver refused the name");
        let trusted = client.trusted.post(format!("http://localhost:{port}/hook")).send();
        let accepted = tokio::time::timeout(Duration::from_secs(2), listener.accept());
        let (_, accepted) = tokio::join!(trusted, accepted);
        assert!(accepted.is_ok(), "the trusted client (Directus for Flows) may reach it");
    }
}
