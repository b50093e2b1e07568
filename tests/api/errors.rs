use crate::helpers::*;

#[tokio::test]
async fn unknown_paths_and_methods_get_json_errors() {
    let app = spawn_app().await;
    let response = app.http.get(app.url("/v1/nope")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(error_code(response).await, "not_found");

    let response = app.http.get(app.url("/v1/route")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(error_code(response).await, "method_not_allowed");
}

#[tokio::test]
async fn dot_segments_do_not_reach_other_routes() {
    let app = spawn_app().await;
    for target in ["/v1/../v1/flags", "/v1/%2e%2e/v1/flags", "/webhooks/%2E%2E/v1/flags", "/v1/route/.."] {
        let request = format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let response = raw_request(app.addr, request.as_bytes()).await;
        assert!(response.starts_with("HTTP/1.1 404"), "{target}: {response}");
        assert!(response.contains(r#""code":"not_found""#), "{target}: {response}");
    }
}

#[tokio::test]
async fn idle_and_half_sent_connections_do_not_starve_others() {
    let app = spawn_app().await;
    let mut idle = Vec::new();
    for _ in 0..200 {
        let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stream, b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        idle.push(stream);
    }
    let response = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    drop(idle);
}
