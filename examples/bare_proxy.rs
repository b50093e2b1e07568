//! The ceiling for the gateway in `scripts/bench.sh`: a proxy with nothing but axum and reqwest (no auth, no
//! routing, no accounting) forwarding `POST /v1/chat/completions` to `UPSTREAM`, as `hello_world` is the ceiling
//! for `/v1/route`. What the sidecar does per call is the difference.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

#[derive(Clone)]
struct Upstream {
    client: reqwest::Client,
    url: String,
}

async fn chat(State(upstream): State<Upstream>, body: Bytes) -> impl IntoResponse {
    let response = upstream
        .client
        .post(&upstream.url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .expect("the upstream answers");
    let answer = response.bytes().await.expect("the upstream's answer arrives whole");
    ([(header::CONTENT_TYPE, "application/json")], answer)
}

#[tokio::main]
async fn main() {
    let addr = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:8797".into());
    let url = std::env::var("UPSTREAM").expect("UPSTREAM: the fake provider's chat completions URL");
    let upstream = Upstream { client: reqwest::Client::new(), url };
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(chat)).with_state(upstream);
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    axum::serve(listener, app).await.unwrap();
}
