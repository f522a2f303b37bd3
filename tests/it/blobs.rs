//! Reading and deleting blobs: HEAD and GET headers, byte ranges, deletes,
//! and which repository a blob is visible in.

use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, RANGE};
use reqwest::StatusCode;

use crate::common::*;

#[tokio::test]
async fn head_and_get_report_size_and_digest() {
    let node = TestNode::start().await;
    let bytes = random_blob(65_537);
    let digest = node.push_blob("heads/up", &bytes).await;
    let path = format!("/v2/heads/up/blobs/{digest}");

    let resp = send(node.head(&path)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        header(&resp, CONTENT_LENGTH.as_str()),
        bytes.len().to_string()
    );
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert!(resp.bytes().await.unwrap().is_empty(), "HEAD has no body");

    let resp = send(node.get(&path)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        header(&resp, CONTENT_LENGTH.as_str()),
        bytes.len().to_string()
    );
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &bytes[..]);
}

#[tokio::test]
async fn range_requests() {
    let node = TestNode::start().await;
    let bytes = random_blob(10_000);
    let size = bytes.len();
    let digest = node.push_blob("ranges", &bytes).await;
    let path = format!("/v2/ranges/blobs/{digest}");
    let cases: [(&str, usize, usize); 6] = [
        ("bytes=0-0", 0, 0),
        ("bytes=100-199", 100, 199),
        ("bytes=9000-", 9000, size - 1),
        ("bytes=-10", size - 10, size - 1),
        // A last byte past the end is cut to the end.
        ("bytes=9990-20000", 9990, size - 1),
        // A suffix longer than the blob is the whole blob.
        ("bytes=-20000", 0, size - 1),
    ];
    for (range, first, last) in cases {
        let resp = send(node.get(&path).header(RANGE, range)).await;
        assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            header(&resp, CONTENT_RANGE.as_str()),
            format!("bytes {first}-{last}/{size}"),
            "{range}"
        );
        assert_eq!(
            header(&resp, CONTENT_LENGTH.as_str()),
            (last - first + 1).to_string(),
            "{range}"
        );
        let body = resp.bytes().await.unwrap();
        assert!(
            body.as_ref() == &bytes[first..=last],
            "{range}: wrong bytes"
        );
    }
    for range in [
        format!("bytes={size}-"),
        format!("bytes={}-{}", size + 5, size + 10),
        "bytes=-0".into(),
    ] {
        let resp = send(node.get(&path).header(RANGE, &range)).await;
        assert_eq!(
            header(&resp, CONTENT_RANGE.as_str()),
            format!("bytes */{size}"),
            "{range}"
        );
        assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
    }
}

#[tokio::test]
async fn empty_blob() {
    let node = TestNode::start().await;
    let digest = node.push_blob("empty", b"").await;
    assert_eq!(
        digest,
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let resp = send(node.get(&format!("/v2/empty/blobs/{digest}"))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, CONTENT_LENGTH.as_str()), "0");
    assert!(resp.bytes().await.unwrap().is_empty());
    let resp = send(
        node.get(&format!("/v2/empty/blobs/{digest}"))
            .header(RANGE, "bytes=0-"),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&resp, CONTENT_RANGE.as_str()), "bytes */0");
}

#[tokio::test]
async fn deleted_blob_is_unknown() {
    let node = TestNode::start().await;
    let bytes = random_blob(2048);
    let digest = node.push_blob("del/blob", &bytes).await;
    let path = format!("/v2/del/blob/blobs/{digest}");
    let resp = send(node.delete(&path)).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_oci_error(send(node.get(&path)).await, 404, "BLOB_UNKNOWN").await;
    assert_eq!(send(node.head(&path)).await.status(), StatusCode::NOT_FOUND);
    assert_oci_error(send(node.delete(&path)).await, 404, "BLOB_UNKNOWN").await;
    // Pushing it again brings it back.
    assert_eq!(node.push_blob("del/blob", &bytes).await, digest);
    assert_eq!(
        send(node.get(&path)).await.bytes().await.unwrap().as_ref(),
        &bytes[..]
    );
}

#[tokio::test]
async fn blobs_are_visible_only_in_their_repository() {
    let node = TestNode::start().await;
    let bytes = random_blob(4000);
    let digest = node.push_blob("owner", &bytes).await;
    for repo in ["other", "owner/sub", "owne"] {
        let path = format!("/v2/{repo}/blobs/{digest}");
        assert_oci_error(send(node.get(&path)).await, 404, "BLOB_UNKNOWN").await;
        assert_eq!(
            send(node.head(&path)).await.status(),
            StatusCode::NOT_FOUND,
            "HEAD in {repo}"
        );
        let resp = send(node.get(&path).header(RANGE, "bytes=0-10")).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "ranged GET in {repo}");
    }
    // Deleting it from another repository changes nothing for the owner.
    let resp = send(node.delete(&format!("/v2/other/blobs/{digest}"))).await;
    assert_oci_error(resp, 404, "BLOB_UNKNOWN").await;
    let resp = send(node.get(&format!("/v2/owner/blobs/{digest}"))).await;
    assert_eq!(resp.status(), StatusCode::OK);
}
