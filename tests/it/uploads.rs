//! Blob uploads: monolithic, sessions with whole, ranged and chunked-encoded
//! chunks, status, cancel, and digest verification.

use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, LOCATION, RANGE};
use reqwest::{Body, StatusCode};

use crate::common::*;

/// Fetches a blob and checks its bytes and digest header.
async fn assert_blob(node: &TestNode, repo: &str, digest: &str, want: &[u8]) {
    let resp = send(node.get(&format!("/v2/{repo}/blobs/{digest}"))).await;
    assert_eq!(resp.status(), StatusCode::OK, "GET {repo} blob {digest}");
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    let body = resp.bytes().await.unwrap();
    assert_eq!(body.len(), want.len());
    assert!(
        body.as_ref() == want,
        "blob bytes differ from what was pushed"
    );
}

/// Checks a 202 session response and returns its Location.
fn session_location(resp: &reqwest::Response, want_len: usize) -> String {
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(
        header(resp, RANGE.as_str()),
        format!("0-{}", want_len.saturating_sub(1))
    );
    let location = header(resp, LOCATION.as_str());
    assert!(location.contains("/blobs/uploads/"), "{location}");
    location
}

#[tokio::test]
async fn monolithic_post_with_digest() {
    let node = TestNode::start().await;
    let bytes = random_blob(100_000);
    let digest = sha256(&bytes);
    let resp = send(
        node.post(&format!("/v2/mono/blobs/uploads/?digest={digest}"))
            .body(bytes.clone()),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    let location = header(&resp, LOCATION.as_str());
    assert!(
        location.ends_with(&format!("/v2/mono/blobs/{digest}")),
        "{location}"
    );
    let resp = send(node.get(&location)).await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "Location of a new blob serves it"
    );
    assert_blob(&node, "mono", &digest, &bytes).await;
}

#[tokio::test]
async fn session_with_one_patch_then_empty_put() {
    // What skopeo does: one PATCH with the whole blob and no Content-Range,
    // then a PUT with the digest and an empty body.
    let node = TestNode::start().await;
    let bytes = random_blob(300_000);
    let digest = sha256(&bytes);
    let resp = send(node.post("/v2/sko/peo/blobs/uploads/")).await;
    let location = session_location(&resp, 0);
    assert!(!header(&resp, "docker-upload-uuid").is_empty());
    let resp = send(node.patch(&location).body(bytes.clone())).await;
    let location = session_location(&resp, bytes.len());
    let resp = send(node.put(&with_digest(&location, &digest))).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert!(header(&resp, LOCATION.as_str()).ends_with(&format!("/v2/sko/peo/blobs/{digest}")));
    assert_blob(&node, "sko/peo", &digest, &bytes).await;
    // The session is gone once committed.
    assert_oci_error(send(node.get(&location)).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
}

#[tokio::test]
async fn ranged_chunks_in_order_and_out_of_order() {
    let node = TestNode::start().await;
    let bytes = random_blob(30_000);
    let digest = sha256(&bytes);
    let mut location = node.start_upload("chunks").await;
    let cuts = [(0, 10_000), (10_000, 25_000), (25_000, 30_000)];
    for (i, &(from, to)) in cuts.iter().enumerate() {
        if i > 0 {
            // A repeat of the previous chunk starts before the offset: 416,
            // and the Range header says where the upload stands.
            let (pfrom, pto) = cuts[i - 1];
            let resp = send(
                node.patch(&location)
                    .header(CONTENT_RANGE, format!("{pfrom}-{}", pto - 1))
                    .body(bytes[pfrom..pto].to_vec()),
            )
            .await;
            assert_eq!(header(&resp, RANGE.as_str()), format!("0-{}", from - 1));
            assert_oci_error(resp, 416, "BLOB_UPLOAD_INVALID").await;
        }
        // A chunk that skips ahead is refused the same way.
        let resp = send(
            node.patch(&location)
                .header(CONTENT_RANGE, format!("{}-{}", from + 1, to))
                .body(bytes[from..to].to_vec()),
        )
        .await;
        assert_eq!(
            header(&resp, RANGE.as_str()),
            format!("0-{}", from.max(1) - 1)
        );
        assert_oci_error(resp, 416, "BLOB_UPLOAD_INVALID").await;

        let resp = send(
            node.patch(&location)
                .header(CONTENT_RANGE, format!("{from}-{}", to - 1))
                .header(CONTENT_LENGTH, to - from)
                .body(bytes[from..to].to_vec()),
        )
        .await;
        location = session_location(&resp, to);
    }
    let resp = send(node.put(&with_digest(&location, &digest))).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_blob(&node, "chunks", &digest, &bytes).await;
}

#[tokio::test]
async fn chunked_transfer_encoding_patch() {
    // podman and buildah stream PATCH bodies with Transfer-Encoding: chunked.
    let node = TestNode::start().await;
    let bytes = random_blob(2 * 1024 * 1024 + 17);
    let digest = sha256(&bytes);
    let location = node.start_upload("pod/man").await;
    let pieces: Vec<Vec<u8>> = bytes.chunks(64 * 1024 + 3).map(<[u8]>::to_vec).collect();
    let stream = futures_util::stream::iter(pieces.into_iter().map(Ok::<_, std::io::Error>));
    let resp = send(node.patch(&location).body(Body::wrap_stream(stream))).await;
    let location = session_location(&resp, bytes.len());
    let resp = send(node.put(&with_digest(&location, &digest))).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_blob(&node, "pod/man", &digest, &bytes).await;
}

#[tokio::test]
async fn single_put_with_whole_body() {
    // What ctr does: POST, then one PUT carrying the whole blob.
    let node = TestNode::start().await;
    let bytes = random_blob(123_457);
    let digest = sha256(&bytes);
    let location = node.start_upload("ctr").await;
    let resp = send(
        node.put(&with_digest(&location, &digest))
            .body(bytes.clone()),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert_blob(&node, "ctr", &digest, &bytes).await;
}

#[tokio::test]
async fn patches_then_put_with_final_chunk() {
    let node = TestNode::start().await;
    let bytes = random_blob(50_000);
    let digest = sha256(&bytes);
    let location = node.start_upload("final").await;
    let resp = send(node.patch(&location).body(bytes[..20_000].to_vec())).await;
    let location = session_location(&resp, 20_000);
    let resp = send(node.patch(&location).body(bytes[20_000..40_000].to_vec())).await;
    let location = session_location(&resp, 40_000);
    let resp = send(
        node.put(&with_digest(&location, &digest))
            .body(bytes[40_000..].to_vec()),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_blob(&node, "final", &digest, &bytes).await;

    // The final chunk may also declare its range.
    let location = node.start_upload("final").await;
    let resp = send(node.patch(&location).body(bytes[..10].to_vec())).await;
    let location = session_location(&resp, 10);
    let other = sha256(&bytes[..30]);
    let resp = send(
        node.put(&with_digest(&location, &other))
            .header(CONTENT_RANGE, "10-29")
            .body(bytes[10..30].to_vec()),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_blob(&node, "final", &other, &bytes[..30]).await;
}

#[tokio::test]
async fn upload_status_reports_offset_and_location() {
    let node = TestNode::start().await;
    let location = node.start_upload("status").await;
    let resp = send(node.get(&location)).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&resp, RANGE.as_str()), "0-0");
    let resp = send(node.patch(&location).body(random_blob(4096))).await;
    let location = session_location(&resp, 4096);
    let resp = send(node.get(&location)).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&resp, RANGE.as_str()), "0-4095");
    let again = header(&resp, LOCATION.as_str());
    assert_eq!(node.url(&again), node.url(&location));
    let uuid = header(&resp, "docker-upload-uuid");
    assert!(location.contains(&uuid), "{location} names {uuid}");
}

#[tokio::test]
async fn cancelled_upload_is_gone() {
    let node = TestNode::start().await;
    let location = node.start_upload("cancel").await;
    let bytes = random_blob(1000);
    let resp = send(node.patch(&location).body(bytes.clone())).await;
    let location = session_location(&resp, 1000);
    let resp = send(node.delete(&location)).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_oci_error(send(node.get(&location)).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let resp = send(node.patch(&location).body(bytes.clone())).await;
    assert_oci_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    let resp = send(node.put(&with_digest(&location, &sha256(&bytes)))).await;
    assert_oci_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;
    assert_oci_error(
        send(node.delete(&location)).await,
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    .await;
    let resp = send(node.get(&format!("/v2/cancel/blobs/{}", sha256(&bytes)))).await;
    assert_oci_error(resp, 404, "BLOB_UNKNOWN").await;
}

#[tokio::test]
async fn wrong_digest_stores_nothing() {
    let node = TestNode::start().await;
    let bytes = random_blob(10_000);
    let actual = sha256(&bytes);
    let claimed = sha256(b"something else");

    let resp = send(
        node.post(&format!("/v2/wrong/blobs/uploads/?digest={claimed}"))
            .body(bytes.clone()),
    )
    .await;
    assert_oci_error(resp, 400, "DIGEST_INVALID").await;

    let location = node.start_upload("wrong").await;
    let resp = send(node.patch(&location).body(bytes.clone())).await;
    let location = session_location(&resp, bytes.len());
    let resp = send(node.put(&with_digest(&location, &claimed))).await;
    assert_oci_error(resp, 400, "DIGEST_INVALID").await;

    let resp = send(
        node.put(&with_digest(&node.start_upload("wrong").await, &claimed))
            .body(bytes.clone()),
    )
    .await;
    assert_oci_error(resp, 400, "DIGEST_INVALID").await;

    for digest in [&claimed, &actual] {
        let resp = send(node.get(&format!("/v2/wrong/blobs/{digest}"))).await;
        assert_oci_error(resp, 404, "BLOB_UNKNOWN").await;
        let resp = send(node.head(&format!("/v2/wrong/blobs/{digest}"))).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
    let dir = node.data_dir();
    assert_eq!(
        files_under(&dir.join("blobs")),
        Vec::<std::path::PathBuf>::new(),
        "no blob file is kept"
    );
    assert_eq!(
        files_under(&dir.join("tmp")),
        Vec::<std::path::PathBuf>::new(),
        "no temporary file is left"
    );
}

#[tokio::test]
async fn sha512_digests_work() {
    let node = TestNode::start().await;
    let bytes = random_blob(77_777);
    let digest = sha512(&bytes);

    let resp = send(
        node.post(&format!("/v2/five/twelve/blobs/uploads/?digest={digest}"))
            .body(bytes.clone()),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert_blob(&node, "five/twelve", &digest, &bytes).await;

    let other = random_blob(5000);
    let other_digest = sha512(&other);
    let location = node.start_upload("five/twelve").await;
    let resp = send(node.patch(&location).body(other.clone())).await;
    let location = session_location(&resp, other.len());
    let resp = send(node.put(&with_digest(&location, &other_digest))).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(header(&resp, "docker-content-digest"), other_digest);
    assert_blob(&node, "five/twelve", &other_digest, &other).await;
    // The sha256 name of the same bytes was never pushed.
    let resp = send(node.get(&format!("/v2/five/twelve/blobs/{}", sha256(&other)))).await;
    assert_oci_error(resp, 404, "BLOB_UNKNOWN").await;
}

/// A node that takes blobs of at most `max` bytes.
async fn node_with_max_blob_size(max: u64) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let mut config = berth::config::ServeConfig::for_test(dir.path());
    config.max_blob_size = max;
    TestNode::start_with(dir, config).await
}

/// Files a refused upload might have left: blob content, or a half-received
/// temporary copy.
fn leftovers(node: &TestNode) -> Vec<std::path::PathBuf> {
    let mut files = files_under(&node.data_dir().join("tmp"));
    files.extend(files_under(&node.data_dir().join("blobs")));
    files
}

#[tokio::test]
async fn a_blob_past_the_size_cap_is_refused_and_nothing_of_it_kept() {
    let node = node_with_max_blob_size(1000).await;
    let bytes = random_blob(1500);
    let digest = sha256(&bytes);
    let monolithic = node
        .post(&format!("/v2/cap/blobs/uploads/?digest={digest}"))
        .body(bytes.clone());
    assert_oci_error(send(monolithic).await, 413, "SIZE_INVALID").await;
    assert_eq!(leftovers(&node), Vec::<std::path::PathBuf>::new());
    // Streamed without a length, too.
    let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(bytes.clone())]);
    let monolithic = node
        .post(&format!("/v2/cap/blobs/uploads/?digest={digest}"))
        .body(Body::wrap_stream(stream));
    assert_oci_error(send(monolithic).await, 413, "SIZE_INVALID").await;
    let location = node.start_upload("cap").await;
    let put = node.put(&with_digest(&location, &digest)).body(bytes);
    assert_oci_error(send(put).await, 413, "SIZE_INVALID").await;
    assert_eq!(leftovers(&node), Vec::<std::path::PathBuf>::new());
    let head = send(node.head(&format!("/v2/cap/blobs/{digest}"))).await;
    assert_eq!(head.status(), StatusCode::NOT_FOUND);
    // A blob within the cap still goes in both ways.
    node.push_blob("cap", &random_blob(1000)).await;
    let small = random_blob(1000);
    let monolithic = node
        .post(&format!("/v2/cap/blobs/uploads/?digest={}", sha256(&small)))
        .body(small);
    assert_eq!(send(monolithic).await.status(), StatusCode::CREATED);
}

/// Sends only the head of an upload request (with `Expect: 100-continue`)
/// and returns the answer, which must come without any of the body.
async fn answer_to_head(
    node: &TestNode,
    method: &str,
    target: &str,
    extra: &[(&str, &str)],
) -> u16 {
    let mut headers = vec![("Expect".to_owned(), "100-continue".to_owned())];
    headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let exchange = crate::raw::request(node.addr(), method, target, &headers, b"");
    let resp = tokio::time::timeout(std::time::Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {target} waited for a body it should refuse unread"))
        .unwrap();
    // A "100 Continue" first would show as the status here.
    resp.status
}

#[tokio::test]
async fn what_the_headers_rule_out_is_refused_before_the_body_is_read() {
    let node = node_with_max_blob_size(1000).await;
    let digest = sha256(b"never sent");
    let location = node.start_upload("cap").await;
    let huge = [("Content-Length", "1000000000000")];
    assert_eq!(answer_to_head(&node, "PATCH", &location, &huge).await, 413);
    let put = with_digest(&location, &digest);
    assert_eq!(answer_to_head(&node, "PUT", &put, &huge).await, 413);
    // Within the cap, but past it with what the session holds.
    let resp = send(node.patch(&location).body(vec![1u8; 600])).await;
    let location = session_location(&resp, 600);
    let over = [("Content-Range", "600-1099"), ("Content-Length", "500")];
    assert_eq!(answer_to_head(&node, "PATCH", &location, &over).await, 413);
    let out_of_order = [("Content-Range", "700-709"), ("Content-Length", "10")];
    assert_eq!(
        answer_to_head(&node, "PATCH", &location, &out_of_order).await,
        416
    );
    let resp = send(node.delete(&location)).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let small = [("Content-Length", "10")];
    assert_eq!(answer_to_head(&node, "PATCH", &location, &small).await, 404);
    assert_eq!(leftovers(&node), Vec::<std::path::PathBuf>::new());
}

/// A body that stalls gets 408 once a window of waiting brought too little,
/// and the session keeps what it held before that request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_gets_408_and_the_session_keeps_what_it_held() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let mut config = berth::config::ServeConfig::for_test(dir.path());
    config.body.window = std::time::Duration::from_secs(1);
    let node = TestNode::start_with(dir, config).await;
    let location = node.start_upload("slow/app").await;
    let resp = send(node.patch(&location).body(vec![1u8; 10])).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let path = header(&resp, LOCATION.as_str());

    let mut tcp = tokio::net::TcpStream::connect(node.addr()).await.unwrap();
    let head =
        format!("PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n0123456789");
    tcp.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(15),
        tcp.read_to_end(&mut answer),
    )
    .await
    .expect("the stalled body is cut off")
    .unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("BLOB_UPLOAD_INVALID"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));

    let resp = send(node.get(&path)).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        header(&resp, RANGE.as_str()),
        "0-9",
        "the session kept its 10 bytes"
    );
}
