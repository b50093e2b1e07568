//! The two wire formats the gateway speaks, reduced to what routing and accounting need: which model,
//! streaming or not, the most the call may use ([`request`]), and what it did use ([`usage`], [`stream`]).

pub mod request;
pub mod stream;
pub mod usage;

pub use request::{LlmRequest, LlmRequestError, parse_request};
pub use stream::StreamTap;
pub use usage::{estimated_usage, usage_from_response};

use super::provider::Provider;

/// The API a request came in on. Each is passed through to its own provider, unchanged apart from asking
/// OpenAI to report usage in streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// OpenAI Chat Completions: `POST /v1/chat/completions`.
    ChatCompletions,
    /// Anthropic Messages: `POST /v1/messages`.
    Messages,
}

impl Api {
    pub fn provider(self) -> Provider {
        match self {
            Api::ChatCompletions => Provider::OpenAi,
            Api::Messages => Provider::Anthropic,
        }
    }

    /// The ledger's `service_type`.
    pub fn service_type(self) -> &'static str {
        match self {
            Api::ChatCompletions => "chat_completions",
            Api::Messages => "messages",
        }
    }
}
