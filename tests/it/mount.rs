//! Cross-repository blob mounts: `POST …/blobs/uploads/?mount=<digest>&from=<repo>`.

use reqwest::header::{LOCATION, RANGE};
use reqwest::StatusCode;

use crate::common::*;

fn mount_path(to: &str, digest: &str, from: Option<&str>) -> String {
    match from {
        Some(from) => format!("/v2/{to}/blobs/uploads/?mount={digest}&from={from}"),
        None => format!("/v2/{to}/blobs/uploads/?mount={digest}"),
    }
}

#[tokio::test]
async fn mount_from_a_repository_that_has_the_blob() {
    let node = TestNode::start().await;
    let bytes = random_blob(20_000);
    let digest = node.push_blob("library/source", &bytes).await;
    let resp = send(node.post(&mount_path("team/target", &digest, Some("library/source")))).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    let location = header(&resp, LOCATION.as_str());
    assert!(
        location.ends_with(&format!("/v2/team/target/blobs/{digest}")),
        "{location}"
    );
    let resp = send(node.get(&location)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &bytes[..]);

    // The mounted blob belongs to the target on its own now.
    let resp = send(node.delete(&format!("/v2/library/source/blobs/{digest}"))).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let resp = send(node.get(&format!("/v2/team/target/blobs/{digest}"))).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &bytes[..]);
}

#[tokio::test]
async fn mount_from_a_repository_without_the_blob_opens_a_session() {
    let node = TestNode::start().await;
    let bytes = random_blob(3000);
    let digest = node.push_blob("elsewhere", &bytes).await;
    for from in ["empty-source", "never-existed"] {
        if from == "empty-source" {
            node.push_blob(from, b"unrelated").await;
        }
        let resp = send(node.post(&mount_path("target", &digest, Some(from)))).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "mount from {from}");
        assert_eq!(header(&resp, RANGE.as_str()), "0-0");
        let location = header(&resp, LOCATION.as_str());
        assert!(location.contains("/v2/target/blobs/uploads/"), "{location}");
        // Not mounted: the target does not hold it.
        let resp = send(node.head(&format!("/v2/target/blobs/{digest}"))).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        // The session is a normal one.
        let resp = send(node.patch(&location).body(bytes.clone())).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        let location = header(&resp, LOCATION.as_str());
        let resp = send(node.put(&with_digest(&location, &digest))).await;
        assert_eq!(resp.status(), StatusCode::CREATED);
        let resp = send(node.delete(&format!("/v2/target/blobs/{digest}"))).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
    }
}

#[tokio::test]
async fn mount_without_from_links_a_known_blob() {
    let node = TestNode::start().await;
    let bytes = random_blob(5000);
    let digest = node.push_blob("somewhere/else", &bytes).await;
    let resp = send(node.post(&mount_path("auto", &digest, None))).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    let resp = send(node.get(&format!("/v2/auto/blobs/{digest}"))).await;
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &bytes[..]);

    // A blob nobody holds gives a session.
    let unknown = sha256(b"nobody has this");
    let resp = send(node.post(&mount_path("auto", &unknown, None))).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert!(header(&resp, LOCATION.as_str()).contains("/v2/auto/blobs/uploads/"));
}

#[tokio::test]
async fn mounted_blobs_satisfy_manifests() {
    let node = TestNode::start().await;
    let image = node.push_image("base/image", "v1").await;
    let mut blobs = vec![image.config.clone()];
    blobs.extend(image.layers.iter().map(|(b, _)| b.clone()));
    // Before mounting, the manifest's blobs are unknown in the new repository.
    let resp = send(
        node.put("/v2/derived/manifests/v1")
            .header("content-type", OCI_MANIFEST)
            .body(image.manifest.clone()),
    )
    .await;
    assert_oci_error(resp, 400, "MANIFEST_BLOB_UNKNOWN").await;
    for blob in &blobs {
        let resp = send(node.post(&mount_path("derived", &blob.digest, Some("base/image")))).await;
        assert_eq!(resp.status(), StatusCode::CREATED, "mount {}", blob.digest);
    }
    let resp = node
        .push_manifest("derived", "v1", OCI_MANIFEST, &image.manifest)
        .await;
    assert_eq!(header(&resp, "docker-content-digest"), image.digest);
}
