//! A minimal stand-in for the OpenAI API, so that `scripts/dev.sh` works offline. Answers
//! `POST /v1/chat/completions` with a fixed completion, or a short SSE stream when the request asks for one.
//! (`scripts/bench.sh` uses nginx with fixed answers instead, the fastest fake there is.)

use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;

const COMPLETION: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hi!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":3,"total_tokens":14}}"#;
const STREAM: &str = concat!(
    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\n",
    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":8,\"completion_tokens\":2,\"total_tokens\":10}}\n\n",
    "data: [DONE]\n\n"
);

async fn chat(body: Bytes) -> impl IntoResponse {
    // A substring check is enough for a benchmark fixture and keeps JSON parsing out of the baseline.
    let streaming = body.windows(14).any(|w| w == b"\"stream\":true");
    if streaming {
        ([(header::CONTENT_TYPE, "text/event-stream")], STREAM)
    } else {
        ([(header::CONTENT_TYPE, "application/json")], COMPLETION)
    }
}

#[tokio::main]
async fn main() {
    let addr = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:8798".into());
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(chat));
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    axum::serve(listener, app).await.unwrap();
}
