//! Streams as a real provider and a real client make them: one that keeps a stream open while its reader is
//! there, and a reader that leaves mid-stream. Shared by the API and the end-to-end suites.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A provider that answers one request with a stream of `events` (chunked SSE). Then, with `keep_alive`, it
/// sends that every 20 ms for as long as the reader is there (as Anthropic's pings do), so a reader that
/// leaves is noticed; without it, the connection just ends, with no final chunk: a stream broken off.
/// Returns the server's base URL.
pub async fn scripted_stream_provider(events: Vec<String>, keep_alive: Option<&'static str>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = vec![0u8; 64 * 1024];
        let _ = socket.read(&mut request).await;
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
        let chunk = |event: &str| format!("{:x}\r\n{event}\r\n", event.len());
        let mut out = head.to_owned();
        for event in &events {
            out.push_str(&chunk(event));
        }
        if socket.write_all(out.as_bytes()).await.is_err() {
            return;
        }
        let Some(keep_alive) = keep_alive else { return };
        while socket.write_all(chunk(keep_alive).as_bytes()).await.is_ok() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    });
    format!("http://{addr}")
}

/// Reads a streamed response until its text contains `marker` `count` times, then drops it: a client that
/// leaves mid-stream.
pub async fn read_until_then_leave(response: reqwest::Response, marker: &str, count: usize) -> String {
    use futures_util::StreamExt;
    let mut stream = response.bytes_stream();
    let mut seen = String::new();
    while seen.matches(marker).count() < count {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
            .await
            .expect("the stream kept coming")
            .expect("the stream did not end early")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    seen
}
