//! Buying credits: the Stripe webhook's secret and currency, and where users go to buy.

use reqwest::Url;

use super::reader::Reader;
use crate::crypto::stripe_signature::StripeSecret;

#[derive(Debug, Clone, Default)]
pub struct PaymentsConfig {
    /// `None`: `/webhooks/stripe` answers 404 and nothing can grant credits but an admin.
    pub stripe: Option<StripeConfig>,
    /// `CREDITS_PURCHASE_URL`: the "Buy credits" link in refusals for credit and on the account page.
    pub purchase_url: Option<Url>,
}

#[derive(Debug, Clone)]
pub struct StripeConfig {
    pub secret: StripeSecret,
    /// Lower case, as Stripe writes it.
    pub currency: String,
}

pub(super) fn read<F: Fn(&str) -> Option<String>>(r: &mut Reader<F>) -> PaymentsConfig {
    let secret = r.parsed(
        "STRIPE_WEBHOOK_SECRET",
        None,
        "Copy the endpoint's signing secret (whsec_...) from Stripe's dashboard, and set the same value as \
         BYOK_BRIDGE_STRIPE_WEBHOOK_SECRET in Directus",
        |raw| StripeSecret::parse(raw).map(Some),
    );
    let currency = r.parsed(
        "STRIPE_CURRENCY",
        "usd".to_owned(),
        "Use the ISO code of the currency your Checkout Sessions charge in, e.g. usd",
        |raw| match raw.len() == 3 && raw.bytes().all(|b| b.is_ascii_alphabetic()) {
            true => Ok(raw.to_ascii_lowercase()),
            false => Err("is not a three-letter currency code"),
        },
    );
    let purchase_url = r.optional_url(
        "CREDITS_PURCHASE_URL",
        "Use the http(s) URL of your checkout or pricing page, e.g. https://app.example.com/billing",
    );
    PaymentsConfig { stripe: secret.map(|secret| StripeConfig { secret, currency }), purchase_url }
}
