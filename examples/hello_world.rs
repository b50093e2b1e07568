//! The ceiling for `scripts/bench.sh`: the smallest axum server, on the same machine and load generator.

#[tokio::main]
async fn main() {
    let addr = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:8799".into());
    let app = axum::Router::new().route("/", axum::routing::post(|| async { "hello" }));
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    axum::serve(listener, app).await.unwrap();
}
