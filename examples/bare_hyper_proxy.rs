//! The ceiling of the stack under the gateway in `scripts/bench.sh`: hyper serving and a hyper-util client
//! forwarding `POST /v1/chat/completions` to `UPSTREAM`, nothing else (no axum, no reqwest, no auth, no
//! accounting). Beside `bare_proxy` (axum + reqwest) it shows what those two layers cost.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

type Upstream = Client<HttpConnector, Full<Bytes>>;

async fn forward(client: Upstream, uri: Uri, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = request.into_body().collect().await.expect("the request arrives whole").to_bytes();
    let upstream =
        Request::post(uri).header("content-type", "application/json").body(Full::new(body)).expect("a valid request");
    let response = client.request(upstream).await.expect("the upstream answers");
    let answer = response.into_body().collect().await.expect("the upstream's answer arrives whole").to_bytes();
    Ok(Response::builder().header("content-type", "application/json").body(Full::new(answer)).expect("a response"))
}

#[tokio::main]
async fn main() {
    let addr = std::env::var("BIND_ADDR").unwrap_or_else(|_| "127.0.0.1:8798".into());
    let uri: Uri =
        std::env::var("UPSTREAM").expect("UPSTREAM: the fake provider's chat completions URL").parse().unwrap();
    let client: Upstream = Client::builder(TokioExecutor::new()).build_http();
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let _ = stream.set_nodelay(true);
        let (client, uri) = (client.clone(), uri.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request| forward(client.clone(), uri.clone(), request));
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
