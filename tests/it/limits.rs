//! Connection limits against real sockets: a client that stops reading its
//! answer, and an HTTP/2 connection left idle, are closed once the idle
//! timeout passes, so neither holds the node's resources forever.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

const IDLE: Duration = Duration::from_secs(1);

async fn node_with_idle_timeout() -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let mut config = berth::config::ServeConfig::for_test(dir.path());
    config.conn.idle_timeout = IDLE;
    TestNode::start_with(dir, config).await
}

/// Reads until the node closes the connection; how long that took, bounded.
async fn until_closed(tcp: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = vec![0u8; 1 << 16];
    let closing = async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, closing).await.ok()?;
    Some(started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off() {
    let node = node_with_idle_timeout().await;
    let blob = random_blob(32 << 20);
    let digest = node.push_blob("idle/app", &blob).await;
    let mut tcp = TcpStream::connect(node.addr()).await.unwrap();
    let get = format!("GET /v2/idle/app/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n");
    tcp.write_all(get.as_bytes()).await.unwrap();
    // Read nothing while the socket buffers fill and the node's writes wait.
    tokio::time::sleep(IDLE * 3).await;
    let mut received = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    let drained = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received += n,
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "the node kept the stalled connection open");
    assert!(
        received < blob.len(),
        "the whole answer arrived ({received} bytes): the node never gave up on it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed() {
    let node = node_with_idle_timeout().await;
    let mut tcp = TcpStream::connect(node.addr()).await.unwrap();
    // The HTTP/2 preface and an empty SETTINGS frame, then silence.
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let took = until_closed(&mut tcp, Duration::from_secs(20)).await;
    let took = took.expect("the idle HTTP/2 connection stayed open");
    assert!(
        took >= IDLE / 2,
        "closed after {took:?}, before the idle timeout"
    );
}
