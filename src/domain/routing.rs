//! The routing policy: which credentials pay for a call, per the spec's configuration matrix.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::error_code::{Code, Coded};
use super::flags::{FlagSet, RoutingMode};
use super::money::Cents;
use super::provider::Provider;
use super::tier::SubscriptionTier;

/// Everything the policy needs to know about the caller, already fetched and parsed.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub tier: SubscriptionTier,
    /// The user has an active key for the provider that is not known to be invalid or out of quota.
    pub has_usable_key: bool,
    /// Credits the user can spend now: the ledger balance less open holds and costs the ledger does not
    /// show yet (see [`crate::domain::credit_book`]).
    pub available: Cents,
    /// What this call may cost at most; credits count only if what is available covers it.
    pub credits_needed: Cents,
}

impl Caller {
    /// Credits pay only from a positive balance that covers the call's most expensive outcome.
    pub fn can_pay(&self) -> bool {
        self.available.is_positive() && self.available >= self.credits_needed
    }

    fn no_credits(&self) -> Refusal {
        Refusal::InsufficientCredits { needed: self.credits_needed, available: self.available }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The user's own provider key.
    Byok,
    /// The platform's key, paid with the user's credits.
    Internal,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Byok => "byok",
            Source::Internal => "internal",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub source: Source,
    pub provider: Provider,
    pub mode: RoutingMode,
}

/// Why no credentials may be used. Every variant tells the user what to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "Action Required: add your {} API key. This platform only runs AI features with your own key. \
         Create one at {} and add it under \"Your API keys\" on your account page.",
        .provider.display_name(), .provider.key_page_url()
    )]
    ByokKeyRequired { provider: Provider },
    #[error(
        "AI features currently require your own API key, which needs a {} plan. Upgrade to continue.",
        .min_tier.as_str()
    )]
    ByokRequiresUpgrade { min_tier: SubscriptionTier },
    #[error(
        "{}", if .available.is_positive() {
            format!(
                "This request may cost up to {} cents and you have {} cents available. Buy more credits, or ask \
                 for fewer output tokens (max_tokens).",
                cents_for_people(*.needed), cents_for_people(*.available)
            )
        } else {
            "You are out of credits. Buy more credits to keep using AI features.".to_owned()
        }
    )]
    InsufficientCredits { needed: Cents, available: Cents },
    #[error(
        "You are out of credits and have no usable {} API key. Add your own key (create one at {}) \
         under \"Your API keys\" on your account page, or buy more credits.",
        .provider.display_name(), .provider.key_page_url()
    )]
    NoCreditsOrKey { provider: Provider },
    #[error(
        "Your own API keys cannot be used right now because key storage is not configured on this \
         platform. Please contact support."
    )]
    ByokNotConfigured,
}

impl Coded for Refusal {
    fn code(&self) -> Code {
        match self {
            Refusal::ByokKeyRequired { .. } => Code::ByokKeyRequired,
            Refusal::ByokRequiresUpgrade { .. } => Code::ByokRequiresUpgrade,
            Refusal::InsufficientCredits { .. } => Code::InsufficientCredits,
            Refusal::NoCreditsOrKey { .. } => Code::NoCreditsOrKey,
            Refusal::ByokNotConfigured => Code::ByokNotConfigured,
        }
    }

    fn message(&self) -> Cow<'static, str> {
        self.to_string().into()
    }
}

/// `0.2700`: cents with the four decimals people can read; the ledger itself keeps nine.
fn cents_for_people(cents: Cents) -> String {
    format!("{:.4}", cents.as_f64())
}

/// Why a user may not manage their own keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ByokAccessDenied {
    #[error("Bring-your-own-key is currently disabled on this platform.")]
    Disabled,
    #[error("Using your own API keys needs a {} plan or higher. Upgrade to add keys.", .min_tier.as_str())]
    TierTooLow { min_tier: SubscriptionTier },
}

impl Coded for ByokAccessDenied {
    fn code(&self) -> Code {
        match self {
            ByokAccessDenied::Disabled => Code::ByokDisabled,
            ByokAccessDenied::TierTooLow { .. } => Code::PremiumRequired,
        }
    }

    fn message(&self) -> Cow<'static, str> {
        self.to_string().into()
    }
}

/// Whether a user may see and manage their own provider keys (the API Keys page).
pub fn byok_access(flags: &FlagSet, tier: SubscriptionTier) -> Result<(), ByokAccessDenied> {
    if !flags.byok_enabled {
        Err(ByokAccessDenied::Disabled)
    } else if !tier.meets(flags.byok_min_tier) {
        Err(ByokAccessDenied::TierTooLow { min_tier: flags.byok_min_tier })
    } else {
        Ok(())
    }
}

/// Decides which credentials pay for a call to `provider`.
///
/// `vault_configured` is false when the sidecar has no `ENCRYPTION_KEY`: stored keys cannot be decrypted, so
/// BYOK is unavailable while internal-credit routing keeps working.
pub fn decide(
    flags: &FlagSet,
    caller: &Caller,
    provider: Provider,
    vault_configured: bool,
) -> Result<Decision, Refusal> {
    let mode = flags.mode();
    let entitled = caller.tier.meets(flags.byok_min_tier);
    let byok_possible = entitled && vault_configured && caller.has_usable_key;
    let has_credits = caller.can_pay();
    let decision = |source| Decision { source, provider, mode };
    let exhausted = || {
        if entitled && vault_configured { Refusal::NoCreditsOrKey { provider } } else { caller.no_credits() }
    };

    match mode {
        RoutingMode::ByokDisabled if has_credits => Ok(decision(Source::Internal)),
        RoutingMode::ByokDisabled => Err(caller.no_credits()),
        RoutingMode::ByokOnly if !entitled => Err(Refusal::ByokRequiresUpgrade { min_tier: flags.byok_min_tier }),
        RoutingMode::ByokOnly if !vault_configured => Err(Refusal::ByokNotConfigured),
        RoutingMode::ByokOnly if caller.has_usable_key => Ok(decision(Source::Byok)),
        RoutingMode::ByokOnly => Err(Refusal::ByokKeyRequired { provider }),
        RoutingMode::CreditFirst if has_credits => Ok(decision(Source::Internal)),
        RoutingMode::CreditFirst if byok_possible => Ok(decision(Source::Byok)),
        RoutingMode::ByokFirst if byok_possible => Ok(decision(Source::Byok)),
        RoutingMode::ByokFirst if has_credits => Ok(decision(Source::Internal)),
        RoutingMode::CreditFirst | RoutingMode::ByokFirst => Err(exhausted()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RoutingMode::*;
    use SubscriptionTier::*;

    /// What the spec says must happen. `Ok` names the source; `Err` names the refusal code.
    type Expected = Result<Source, &'static str>;
    const BYOK: Expected = Ok(Source::Byok);
    const INTERNAL: Expected = Ok(Source::Internal);
    const NO_CREDITS: Expected = Err("insufficient_credits");
    const KEY_REQUIRED: Expected = Err("byok_key_required");
    const UPGRADE: Expected = Err("byok_requires_upgrade");
    const NO_CREDITS_OR_KEY: Expected = Err("no_credits_or_key");

    fn flags_for(mode: RoutingMode, only_and_credit_first: bool) -> FlagSet {
        // `only_and_credit_first` exercises the "any" columns of the matrix: the flags that must not matter.
        let (enabled, only, credits) = match mode {
            ByokDisabled => (false, only_and_credit_first, !only_and_credit_first),
            ByokOnly => (true, true, only_and_credit_first),
            CreditFirst => (true, false, true),
            ByokFirst => (true, false, false),
        };
        FlagSet {
            byok_enabled: enabled,
            byok_only_mode: only,
            byok_uses_internal_credits: credits,
            byok_min_tier: Premium,
        }
    }

    fn caller(tier: SubscriptionTier, has_key: bool, credits: bool) -> Caller {
        let grant = if credits { 500 } else { 0 };
        Caller { tier, has_usable_key: has_key, available: Cents::whole(grant), credits_needed: Cents::from_nanos(1) }
    }

    fn outcome(result: Result<Decision, Refusal>) -> Expected {
        result.map(|d| d.source).map_err(|r| r.code().as_str())
    }

    /// Every row of the configuration matrix x tier x (key / no key) x (credits / none).
    #[rustfmt::skip]
    const MATRIX: &[(RoutingMode, SubscriptionTier, bool, bool, Expected)] = &[
        // mode          tier      key    credits  expected
        (ByokDisabled,   Free,     false, false,   NO_CREDITS),
        (ByokDisabled,   Free,     false, true,    INTERNAL),
        (ByokDisabled,   Free,     true,  false,   NO_CREDITS),
        (ByokDisabled,   Free,     true,  true,    INTERNAL),
        (ByokDisabled,   Premium,  false, false,   NO_CREDITS),
        (ByokDisabled,   Premium,  false, true,    INTERNAL),
        (ByokDisabled,   Premium,  true,  false,   NO_CREDITS),
        (ByokDisabled,   Premium,  true,  true,    INTERNAL),
        (ByokDisabled,   Lifetime, false, false,   NO_CREDITS),
        (ByokDisabled,   Lifetime, false, true,    INTERNAL),
        (ByokDisabled,   Lifetime, true,  false,   NO_CREDITS),
        (ByokDisabled,   Lifetime, true,  true,    INTERNAL),
        (ByokOnly,       Free,     false, false,   UPGRADE),
        (ByokOnly,       Free,     false, true,    UPGRADE),
        (ByokOnly,       Free,     true,  false,   UPGRADE),
        (ByokOnly,       Free,     true,  true,    UPGRADE),
        (ByokOnly,       Premium,  false, false,   KEY_REQUIRED),
        (ByokOnly,       Premium,  false, true,    KEY_REQUIRED),
        (ByokOnly,       Premium,  true,  false,   BYOK),
        (ByokOnly,       Premium,  true,  true,    BYOK),
        (ByokOnly,       Lifetime, false, false,   KEY_REQUIRED),
        (ByokOnly,       Lifetime, false, true,    KEY_REQUIRED),
        (ByokOnly,       Lifetime, true,  false,   BYOK),
        (ByokOnly,       Lifetime, true,  true,    BYOK),
        (CreditFirst,    Free,     false, false,   NO_CREDITS),
        (CreditFirst,    Free,     false, true,    INTERNAL),
        (CreditFirst,    Free,     true,  false,   NO_CREDITS),
        (CreditFirst,    Free,     true,  true,    INTERNAL),
        (CreditFirst,    Premium,  false, false,   NO_CREDITS_OR_KEY),
        (CreditFirst,    Premium,  false, true,    INTERNAL),
        (CreditFirst,    Premium,  true,  false,   BYOK),
        (CreditFirst,    Premium,  true,  true,    INTERNAL),
        (CreditFirst,    Lifetime, false, false,   NO_CREDITS_OR_KEY),
        (CreditFirst,    Lifetime, false, true,    INTERNAL),
        (CreditFirst,    Lifetime, true,  false,   BYOK),
        (CreditFirst,    Lifetime, true,  true,    INTERNAL),
        (ByokFirst,      Free,     false, false,   NO_CREDITS),
        (ByokFirst,      Free,     false, true,    INTERNAL),
        (ByokFirst,      Free,     true,  false,   NO_CREDITS),
        (ByokFirst,      Free,     true,  true,    INTERNAL),
        (ByokFirst,      Premium,  false, false,   NO_CREDITS_OR_KEY),
        (ByokFirst,      Premium,  false, true,    INTERNAL),
        (ByokFirst,      Premium,  true,  false,   BYOK),
        (ByokFirst,      Premium,  true,  true,    BYOK),
        (ByokFirst,      Lifetime, false, false,   NO_CREDITS_OR_KEY),
        (ByokFirst,      Lifetime, false, true,    INTERNAL),
        (ByokFirst,      Lifetime, true,  false,   BYOK),
        (ByokFirst,      Lifetime, true,  true,    BYOK),
    ];

    #[test]
    fn every_matrix_cell_routes_as_the_spec_says() {
        assert_eq!(MATRIX.len(), 4 * 3 * 2 * 2);
        for &(mode, tier, key, credits, expected) in MATRIX {
            for any in [false, true] {
                let flags = flags_for(mode, any);
                assert_eq!(flags.mode(), mode);
                for provider in Provider::all() {
                    let result = decide(&flags, &caller(tier, key, credits), provider, true);
                    assert_eq!(
                        outcome(result),
                        expected,
                        "{mode:?} tier={tier:?} key={key} credits={credits} any={any} {provider}"
                    );
                    if let Ok(d) = result {
                        assert_eq!((d.mode, d.provider), (mode, provider));
                    }
                }
            }
        }
    }

    #[test]
    fn without_an_encryption_key_byok_is_unavailable_but_credits_still_work() {
        let premium_with_key = |credits| caller(Premium, true, credits);
        let run = |mode, credits| {
            outcome(decide(&flags_for(mode, false), &premium_with_key(credits), Provider::openai(), false))
        };
        assert_eq!(run(ByokFirst, true), INTERNAL);
        assert_eq!(run(CreditFirst, true), INTERNAL);
        assert_eq!(run(ByokFirst, false), NO_CREDITS);
        assert_eq!(run(CreditFirst, false), NO_CREDITS);
        assert_eq!(run(ByokOnly, true), Err("byok_not_configured"));
        assert_eq!(run(ByokDisabled, true), INTERNAL);
    }

    #[test]
    fn a_lifetime_only_flag_keeps_premium_users_on_credits() {
        let mut flags = flags_for(ByokFirst, false);
        flags.byok_min_tier = Lifetime;
        let premium = outcome(decide(&flags, &caller(Premium, true, true), Provider::anthropic(), true));
        let lifetime = outcome(decide(&flags, &caller(Lifetime, true, true), Provider::anthropic(), true));
        assert_eq!((premium, lifetime), (INTERNAL, BYOK));
    }

    #[test]
    fn action_required_message_names_the_provider_and_where_to_get_a_key() {
        let msg = Refusal::ByokKeyRequired { provider: Provider::openai() }.to_string();
        assert!(msg.starts_with("Action Required: add your OpenAI API key"), "{msg}");
        assert!(msg.contains("https://platform.openai.com/api-keys"), "{msg}");
        let msg = Refusal::NoCreditsOrKey { provider: Provider::anthropic() }.to_string();
        assert!(msg.contains("Anthropic") && msg.contains("console.anthropic.com"), "{msg}");
    }

    #[test]
    fn only_premium_and_lifetime_users_manage_keys_and_only_while_byok_is_enabled() {
        let on = flags_for(ByokFirst, false);
        assert_eq!(byok_access(&on, Free), Err(ByokAccessDenied::TierTooLow { min_tier: Premium }));
        assert_eq!(byok_access(&on, Premium), Ok(()));
        assert_eq!(byok_access(&on, Lifetime), Ok(()));
        assert_eq!(byok_access(&flags_for(ByokDisabled, false), Lifetime), Err(ByokAccessDenied::Disabled));
    }

    #[test]
    fn credits_count_only_when_they_cover_the_estimated_cost() {
        let mut c = caller(Premium, true, true);
        c.credits_needed = Cents::whole(501);
        assert_eq!(outcome(decide(&flags_for(CreditFirst, false), &c, Provider::openai(), true)), BYOK);
        c.has_usable_key = false;
        assert_eq!(outcome(decide(&flags_for(ByokFirst, false), &c, Provider::openai(), true)), NO_CREDITS_OR_KEY);
        c.credits_needed = Cents::whole(500);
        assert_eq!(outcome(decide(&flags_for(ByokFirst, false), &c, Provider::openai(), true)), INTERNAL);
        c.credits_needed = Cents::ZERO;
        c.available = Cents::ZERO;
        assert_eq!(outcome(decide(&flags_for(ByokFirst, false), &c, Provider::openai(), true)), NO_CREDITS_OR_KEY);
    }

    #[test]
    fn the_source_header_value_matches_the_json_name() {
        for source in [Source::Byok, Source::Internal] {
            assert_eq!(serde_json::to_value(source).unwrap(), source.as_str());
        }
    }

    #[test]
    fn a_negative_balance_counts_as_no_credits() {
        let mut c = caller(Free, false, false);
        c.available = Cents::whole(-5);
        let result = decide(&flags_for(ByokDisabled, false), &c, Provider::openai(), true);
        assert_eq!(outcome(result), NO_CREDITS);
    }

    #[test]
    fn a_refusal_for_want_of_credits_says_what_the_call_needs_and_what_is_available() {
        let mut c = caller(Free, false, true);
        c.credits_needed = Cents::whole(600);
        let refusal = decide(&flags_for(ByokDisabled, false), &c, Provider::openai(), true).unwrap_err();
        assert_eq!(refusal, Refusal::InsufficientCredits { needed: Cents::whole(600), available: Cents::whole(500) });
        let message = refusal.to_string();
        assert!(message.contains("600.0000 cents") && message.contains("500.0000 cents available"), "{message}");
    }
}
