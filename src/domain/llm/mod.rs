//! The wire formats the gateway speaks, reduced to what routing and accounting need: which model,
//! streaming or not, the most the call may use ([`request`]), and what it did use ([`usage`], [`stream`]).

pub mod request;
pub mod stream;
pub mod usage;

pub use request::{LlmRequest, LlmRequestError, parse_request, target};
pub use stream::StreamTap;
pub use usage::{estimated_usage, usage_from_response};

use super::provider::ApiStyle;

/// The API a request came in on. Each is passed through to a provider of its style, unchanged apart from
/// asking for usage in streams and naming the provider's own model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// OpenAI Chat Completions: `POST /v1/chat/completions`.
    ChatCompletions,
    /// Anthropic Messages: `POST /v1/messages`.
    Messages,
    /// OpenAI Responses: `POST /v1/responses`.
    Responses,
    /// OpenAI Embeddings: `POST /v1/embeddings`. Input tokens only; never streamed.
    Embeddings,
    /// Anthropic's token count: `POST /v1/messages/count_tokens`. Free at the provider: never held or charged.
    CountTokens,
}

impl Api {
    pub const ALL: [Api; 5] = [Api::ChatCompletions, Api::Messages, Api::Responses, Api::Embeddings, Api::CountTokens];

    /// The chat API of providers of `style`.
    pub fn chat(style: ApiStyle) -> Api {
        match style {
            ApiStyle::OpenAi => Api::ChatCompletions,
            ApiStyle::Anthropic => Api::Messages,
        }
    }

    /// The providers that serve it.
    pub fn style(self) -> ApiStyle {
        match self {
            Api::ChatCompletions | Api::Responses | Api::Embeddings => ApiStyle::OpenAi,
            Api::Messages | Api::CountTokens => ApiStyle::Anthropic,
        }
    }

    /// Whether the provider bills it, so that credits are held for it and its usage recorded.
    pub fn is_billed(self) -> bool {
        self != Api::CountTokens
    }

    /// Where it is sent, relative to the provider's API root (see [`crate::providers`]).
    pub fn path(self) -> &'static str {
        match self {
            Api::ChatCompletions => "chat/completions",
            Api::Messages => "v1/messages",
            Api::Responses => "responses",
            Api::Embeddings => "embeddings",
            Api::CountTokens => "v1/messages/count_tokens",
        }
    }

    /// The ledger's `service_type`.
    pub fn service_type(self) -> &'static str {
        match self {
            Api::ChatCompletions => "chat_completions",
            Api::Messages => "messages",
            Api::Responses => "responses",
            Api::Embeddings => "embeddings",
            Api::CountTokens => "count_tokens",
        }
    }
}
