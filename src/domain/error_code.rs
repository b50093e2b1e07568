//! Every error code the service answers with, in one table: the code programs switch on, the HTTP status it
//! comes with, and the message for people when the error knows nothing more specific. A code answered with two
//! statuses (a provider unknown in a body or in a path) has a row for each.
//!
//! Errors say their code through [`Coded`]; the HTTP layer only turns that into a response.

use std::borrow::Cow;
use std::time::Duration;

macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = ($code:literal, $status:literal, $message:literal),)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $($(#[$doc])* $name,)*
        }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$name,)*];

            /// Stable: what programs switch on.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Code::$name => $code,)*
                }
            }

            pub const fn status(self) -> u16 {
                match self {
                    $(Code::$name => $status,)*
                }
            }

            /// For people; never echoes request data or secrets.
            pub const fn message(self) -> &'static str {
                match self {
                    $(Code::$name => $message,)*
                }
            }
        }
    };
}

codes! {
    // Who is calling.
    /// Every token problem gets this one answer, so a caller cannot tell which check failed.
    Unauthorized = ("unauthorized", 401, "Missing or invalid access token. Log in again and retry with a fresh token."),
    InvalidSignature = ("invalid_signature", 401, "Webhook signature missing, invalid or expired."),
    /// Stripe retries a delivery answered with any status but 2xx; 400 is what its own examples answer.
    InvalidPaymentSignature = ("invalid_signature", 400, "Stripe-Signature missing, invalid, or older than the 5-minute tolerance."),
    InvalidCredentials = ("invalid_credentials", 401, "Wrong e-mail address or password."),
    OtpRequired = ("otp_required", 401, "Enter the code from your authenticator app."),
    AccountInactive = ("account_inactive", 403, "Your account is not active. Contact support if you think this is a mistake."),
    TooManySignInAttempts = ("too_many_sign_in_attempts", 429, "Too many sign-in attempts. Wait for the time in Retry-After, then try again."),
    SignInLocked = ("sign_in_locked", 429, "This account had too many failed sign-ins here, so this page stops trying to protect it from being locked. Sign in to the app itself (or reset your password there); this page lets you in again once you have."),

    // What was sent.
    InvalidJson = ("invalid_json", 400, "The body is not valid JSON."),
    InvalidRequest = ("invalid_request", 400, "The request is not valid."),
    /// The body is JSON of the wrong shape (an unknown field, a missing one).
    InvalidRequestShape = ("invalid_request", 422, "The body has the wrong shape."),
    UnsupportedMediaType = ("unsupported_media_type", 415, "Send the body as JSON with Content-Type: application/json."),
    PayloadTooLarge = ("payload_too_large", 413, "The body is too large."),
    BodyTimeout = ("body_timeout", 408, "The request body arrived too slowly and was not read. Send it again over a faster connection."),
    UnknownProvider = ("unknown_provider", 400, "Unknown provider. GET /v1/providers lists the providers this platform offers."),
    /// A provider in a path names no resource.
    UnknownProviderInPath = ("unknown_provider", 404, "Unknown provider. GET /v1/providers lists the providers this platform offers."),
    NotFound = ("not_found", 404, "No such endpoint."),
    MethodNotAllowed = ("method_not_allowed", 405, "This endpoint does not accept that method."),
    NotificationNotFound = ("notification_not_found", 404, "You have no notification with this id."),

    // How much.
    RateLimited = ("rate_limited", 429, "Too many requests of this kind. Wait for the time in Retry-After, then retry."),
    TooManyRequestsInFlight = ("too_many_requests_in_flight", 429, "You have as many requests in progress as one account may. Wait for one to finish."),
    TooManyConcurrentCalls = ("too_many_concurrent_calls", 429, "You have as many AI requests running at once as one account may. Wait for one to finish, then retry."),
    ServerBusy = ("server_busy", 503, "The service is receiving too many large requests right now. Retry in a moment."),
    Timeout = ("timeout", 503, "The request took too long. Retry shortly."),

    // Who pays (the routing matrix).
    ByokKeyRequired = ("byok_key_required", 403, "This platform requires your own API key for AI features. Add one on your account page."),
    ByokRequiresUpgrade = ("byok_requires_upgrade", 403, "Using your own API key needs a premium plan. Upgrade to use AI features."),
    InsufficientCredits = ("insufficient_credits", 402, "You do not have enough credits for this request. Top up, or add your own API key."),
    BudgetAboveCeiling = ("budget_above_ceiling", 422, "That cap is above what your plan allows."),
    BudgetsNotEnabled = ("budgets_not_enabled", 404, "Spending caps are not set up on this platform."),
    BudgetExceeded = ("budget_exceeded", 402, "This request could take your spending past one of your caps. Wait until the cap starts over, or ask to raise it."),
    NoCreditsOrKey = ("no_credits_or_key", 402, "You have no credits left and no usable API key of your own. Top up, or add your own key."),
    ByokNotConfigured = ("byok_not_configured", 503, "Saving your own API keys is not available: key storage is not configured on this platform. Please contact support."),
    ByokDisabled = ("byok_disabled", 404, "Bring-your-own-key is switched off on this platform."),
    PremiumRequired = ("premium_required", 403, "Your own API keys need a premium or lifetime plan."),

    // The user's keys (also the reasons the account page gives for a provider).
    InvalidKeyFormat = ("invalid_key_format", 422, "This does not look like an API key of this provider."),
    KeyRejected = ("key_rejected", 422, "The provider rejected this API key: it may be mistyped, revoked or lack permissions."),
    KeyNotFound = ("key_not_found", 404, "You have no saved key for this provider."),
    KeyUnusable = ("key_unusable", 409, "We can no longer read your saved key. Please enter it again."),
    NoKey = ("no_key", 403, "Add your API key of this provider to use it."),
    KeyInvalid = ("key_invalid", 403, "The provider rejected your key. Create a new one and save it."),
    KeyQuotaExceeded = ("key_quota_exceeded", 402, "Your account with the provider is out of quota. Add credit: the key is checked again automatically, or verify it now."),

    // The providers.
    ProviderRateLimited = ("provider_rate_limited", 429, "The provider is rate limiting these requests. Retry after the time in Retry-After."),
    ProviderKeyInvalid = ("provider_key_invalid", 403, "The provider rejected your API key. Create a new one and save it on your account page."),
    ProviderQuotaExhausted = ("provider_quota_exhausted", 402, "Your account with the provider has no quota or credit left. Add credit, then retry."),
    /// A job's call the provider refused itself (an unknown model): its answer is kept with the job.
    ProviderRefusedRequest = ("provider_refused_request", 400, "The provider refused the request itself; nothing was charged."),
    ServiceTierNotAvailable = ("service_tier_not_available", 422, "Priority, flex and scale processing (service_tier) are not available on platform credits."),
    GatewayBusy = ("gateway_busy", 503, "Too many AI requests are running right now. Retry in a moment."),
    UpstreamError = ("upstream_error", 502, "The AI provider's answer broke off on its way. It bills the generation all the same, so the call was charged its whole budget; please retry."),
    /// Inside a stream that had begun (200): the provider stopped mid-way.
    UpstreamStreamInterrupted = ("upstream_stream_interrupted", 502, "The AI provider stopped answering mid-way. Only what you received was charged; please retry."),
    AiTimeout = ("ai_timeout", 504, "The provider did not finish answering in time; the call was charged its whole budget. Ask for a shorter answer, or stream long ones."),
    PlatformBudgetExhausted = ("platform_budget_exhausted", 503, "AI features on platform credits are paused until 00:00 UTC: the platform's budget for today is spent. Your own API keys keep working."),
    AiUnavailable = ("ai_unavailable", 503, "AI features are temporarily unavailable. Everything else keeps working; retry in a little while."),

    // Jobs.
    StreamingNotSupported = ("streaming_not_supported", 422, "Jobs return the complete answer; remove \"stream\": true (or call the gateway directly to stream)."),
    InvalidCallbackUrl = ("invalid_callback_url", 422, "callback_url must be an https URL this service may reach."),
    InvalidMetadata = ("invalid_metadata", 422, "\"metadata\" must be a JSON object of at most 16 KiB."),
    InvalidIdempotencyKey = ("invalid_idempotency_key", 400, "Idempotency-Key must be 1 to 255 visible ASCII characters (a UUID is a good choice)."),
    IdempotencyKeyReused = ("idempotency_key_reused", 422, "This Idempotency-Key was used for a different request. Use a new key for a new job."),
    JobQueueFull = ("job_queue_full", 429, "You have as many background requests waiting as allowed. Wait for some to finish, or cancel some, then submit again."),
    JobStorageFull = ("job_storage_full", 429, "Your background requests hold as much as one account may keep. Cancel waiting ones or submit smaller requests."),
    JobNotFound = ("job_not_found", 404, "You have no job with this id."),
    JobNotRetryable = ("job_not_retryable", 409, "Only failed or paused jobs can be retried."),
    JobFinished = ("job_finished", 409, "The job is finished already."),
    JobsUnavailable = ("jobs_unavailable", 503, "The job queue is unavailable right now. Retry shortly."),

    // Buying credits.
    PaymentsNotConfigured = ("payments_not_configured", 404, "Buying credits is not set up on this platform (STRIPE_WEBHOOK_SECRET is not set)."),
    MalformedPaymentEvent = ("malformed_payment_event", 422, "The payment event is not shaped as its type says."),

    // Recent calls.
    CallsUnavailable = ("calls_unavailable", 503, "Your recent calls cannot be read right now. Retry shortly."),

    // This service and Directus.
    FlagsUnavailable = ("flags_unavailable", 503, "AI features are temporarily unavailable while the service starts up. Retry in a moment."),
    AccountServiceUnavailable = ("account_service_unavailable", 503, "AI features are temporarily unavailable because account data cannot be read. Retry shortly."),
    Internal = ("internal", 500, "Something went wrong on our side. Retry shortly."),
}

/// An error that knows its code. The message may say more than the code's default (which provider, how
/// many), and some errors know when the caller may retry.
pub trait Coded {
    fn code(&self) -> Code;

    fn message(&self) -> Cow<'static, str> {
        Cow::Borrowed(self.code().message())
    }

    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

impl Coded for Code {
    fn code(&self) -> Code {
        *self
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn every_code_is_snake_case_with_an_error_status_and_a_message() {
        for code in Code::ALL {
            let text = code.as_str();
            assert!(!text.is_empty() && text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{text}");
            assert!((400..600).contains(&code.status()), "{text}");
            assert!(code.message().ends_with('.'), "{text}: a sentence");
        }
    }

    #[test]
    fn a_code_appears_once_per_status() {
        let mut seen = HashMap::new();
        for code in Code::ALL {
            let earlier = seen.insert((code.as_str(), code.status()), *code);
            assert!(earlier.is_none(), "{} {} twice: {earlier:?} and {code:?}", code.as_str(), code.status());
        }
    }
}
