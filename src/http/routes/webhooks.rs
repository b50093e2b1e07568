use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{FromRef, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::crypto::webhook_signature::{Delivery, TOLERANCE_SECS, WebhookSecret};
use crate::domain::error_code::Code;
use crate::domain::flags::PushedFlags;
use crate::domain::payment::PaymentEvent;
use crate::domain::sign_in::Account;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::RawBody;
use crate::http::state::AppState;
use crate::metrics;
use crate::services::flag_cache::{FlagCache, Pushed};
use crate::services::payments::Payments;
use crate::services::sign_in::SignInGuard;
use crate::shared::bus::{Bus, Event};
use crate::shared::claims::Claims;

/// What the Directus hook's webhooks reach: its secret, the flag cache and the bus (flag changes), the claims
/// (each webhook applied once), and the sign-in guard (sign-ins reported from Directus).
pub struct Hook {
    secret: Arc<WebhookSecret>,
    flags: Arc<FlagCache>,
    bus: Arc<dyn Bus>,
    claims: Arc<dyn Claims>,
    sign_in: Arc<SignInGuard>,
}

impl FromRef<AppState> for Hook {
    fn from_ref(state: &AppState) -> Self {
        Hook {
            secret: FromRef::from_ref(state),
            flags: FromRef::from_ref(state),
            bus: FromRef::from_ref(state),
            claims: FromRef::from_ref(state),
            sign_in: FromRef::from_ref(state),
        }
    }
}

/// The parts of the hook's payload we act on; the signature covers the whole body.
#[derive(Debug, Deserialize)]
struct DirectusEvent {
    #[serde(rename = "type")]
    kind: String,
    /// Every flag as the hook read it after the change (our hook sends them; without, we reload).
    flags: Option<PushedFlags>,
    #[serde(default)]
    data: EventData,
}

#[derive(Debug, Default, Deserialize)]
struct EventData {
    /// `auth.login`: the account that signed in to Directus.
    email: Option<String>,
}

/// A successful sign-in to Directus (anywhere: its app, its API, or through us): Directus forgot the account's
/// failed attempts, so the sidecar forgets its count too.
const SIGN_IN_EVENT: &str = "auth.login";

const FLAG_EVENTS: [&str; 3] =
    ["feature_flags.items.create", "feature_flags.items.update", "feature_flags.items.delete"];

/// A signed notice from our Directus hook that something changed. Flag changes reload the flag cache
/// before answering, so the next routing decision uses them; a successful sign-in clears the account's
/// sign-in attempts.
#[utoipa::path(post, path = "/webhooks/directus", tag = "operations", security(("webhook_signature" = [])),
    request_body(content = Object, description = r#"{"type": "feature_flags.items.update", ...}"#),
    responses((status = 200, description = "`applied`, `duplicate` or `ignored`", body = Object),
              (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn directus(
    State(hook): State<Hook>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Json<Value>, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let delivery = Delivery {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: &body,
    };
    let now = time::OffsetDateTime::now_utc();
    hook.secret.verify(&delivery, now.unix_timestamp()).map_err(|reason| {
        tracing::warn!(%reason, "webhook refused");
        ApiError::from(Code::InvalidSignature)
    })?;
    if let Some(sent) = delivery.timestamp.and_then(|t| t.parse::<i64>().ok()) {
        let lag = (now - time::OffsetDateTime::from_unix_timestamp(sent).unwrap_or(now)).unsigned_abs();
        metrics::webhook_lag(lag);
    }
    let id = delivery.id.unwrap_or_default().to_owned();
    let event: DirectusEvent = serde_json::from_slice(&body)
        .map_err(|_| ApiError::new(Code::InvalidJson, r#"Expected {"type": "<collection>.items.<action>", ...}."#))?;

    if event.kind == SIGN_IN_EVENT
        && let Some(email) = event.data.email.as_deref()
    {
        hook.sign_in.succeeded(&Account::of_email(email)).await;
        tracing::info!(webhook_id = %id, "an account signed in to Directus; its sign-in attempts here are forgotten");
        return Ok(Json(json!({"status": "applied"})));
    }
    if !FLAG_EVENTS.contains(&event.kind.as_str()) {
        tracing::info!(webhook_id = %id, kind = %event.kind, "webhook ignored");
        return Ok(Json(json!({"status": "ignored"})));
    }
    // Claimed by id for twice the replay window, so a redelivery is a no-op: here first; then the change takes
    // effect at once (the admin's next request may already be on its way: the hook does not wait for us);
    // then the claim across replicas (with Redis), and the other replicas are told.
    let claim = format!("webhook:{id}");
    let window = Duration::from_secs(2 * TOLERANCE_SECS as u64);
    if !hook.claims.claim_here(&claim, window).await {
        tracing::info!(webhook_id = %id, "webhook already applied");
        return Ok(Json(json!({"status": "duplicate"})));
    }
    // Pushed flags are put in force as they are; otherwise the cached ones are dropped and loaded again.
    let pushed = event.flags.filter(PushedFlags::is_plausible);
    let outcome = match &pushed {
        Some(flags) => hook.flags.apply(flags).await,
        None => Pushed::Ambiguous,
    };
    if outcome == Pushed::Ambiguous {
        hook.flags.invalidate();
    }
    if !hook.claims.claim_everywhere(&claim, window).await {
        tracing::info!(webhook_id = %id, "webhook already applied by another replica");
        return Ok(Json(json!({"status": "duplicate"})));
    }
    match (outcome, pushed) {
        (Pushed::Applied, Some(flags)) => {
            hook.bus.publish(Event::FlagsPushed(Arc::new(flags))).await;
            let current = hook.flags.current().await?;
            tracing::info!(webhook_id = %id, kind = %event.kind, flags = ?current.snapshot.flags, "feature flags applied");
            return Ok(Json(json!({"status": "applied"})));
        }
        (Pushed::Outdated, _) => {
            tracing::info!(webhook_id = %id, "webhook carries flags older than those in force; ignored");
            return Ok(Json(json!({"status": "outdated"})));
        }
        _ => {}
    }
    let (reloaded, ()) = tokio::join!(hook.flags.current(), hook.bus.publish(Event::FlagsChanged));
    // A failed reload answers 503 so the hook retries (the claim is given up); the stale flags stay meanwhile.
    let current = match reloaded {
        Ok(current) if !current.stale => current,
        failed => {
            hook.claims.release(&claim).await;
            failed?;
            return Err(ApiError::from(Code::AccountServiceUnavailable));
        }
    };
    tracing::info!(webhook_id = %id, kind = %event.kind, flags = ?current.snapshot.flags, "feature flags reloaded");
    Ok(Json(json!({"status": "applied"})))
}

/// A Stripe event (the endpoint's events: `checkout.session.completed`,
/// `checkout.session.async_payment_succeeded`, `charge.refunded`). A paid Checkout Session grants its amount
/// in credits to the Directus user its `client_reference_id` (or `metadata.user_id`) names, once per
/// payment; a refund takes back what was refunded. Answered as Stripe expects: `200` once the event is
/// handled or deliberately left alone (a repeat, another type, a payment for no known user: Stripe's retries
/// would change nothing), `400` for a bad signature, `503` while the ledger cannot be written (Stripe
/// delivers again).
#[utoipa::path(post, path = "/webhooks/stripe", tag = "operations",
    request_body(content = Object, description = "A Stripe event, signed in the `Stripe-Signature` header"),
    responses((status = 200, description = r#"{"received": true, "outcome": "granted"}; outcome is granted, refunded, duplicate, ignored, unknown_user, wrong_currency or unknown_payment"#, body = Object),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn stripe(
    State(payments): State<Option<Arc<Payments>>>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Json<Value>, ApiError> {
    let payments = payments.ok_or(Code::PaymentsNotConfigured)?;
    let signature = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    payments.verify(signature, &body, now).map_err(|reason| {
        tracing::warn!(%reason, "Stripe webhook refused");
        ApiError::from(Code::InvalidPaymentSignature)
    })?;
    let event = PaymentEvent::parse(&body).map_err(|problem| {
        tracing::error!(%problem, "a signed Stripe event could not be read");
        ApiError::new(Code::MalformedPaymentEvent, format!("The payment event could not be read: {problem}."))
    })?;
    // Verified, so UTF-8 JSON from Stripe; the Directus hook checks the grant against these same bytes.
    let text = std::str::from_utf8(&body).map_err(|_| Code::MalformedPaymentEvent)?;
    let outcome = payments.apply(event, text, signature.unwrap_or_default()).await?;
    Ok(Json(json!({"received": true, "outcome": outcome})))
}
