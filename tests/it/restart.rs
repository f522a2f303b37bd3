//! A node restarted on the same data directory keeps everything, including
//! upload sessions in progress.

use reqwest::header::{CONTENT_RANGE, LOCATION, RANGE};
use reqwest::StatusCode;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn pushed_content_survives_restart() {
    let mut node = TestNode::start().await;
    let image = node.push_image("persist/app", "v1").await;
    node.push_manifest("persist/app", "stable", OCI_MANIFEST, &image.manifest)
        .await;
    let other = random_blob(9000);
    let other_digest = node.push_blob("persist/other", &other).await;
    let deleted = node.push_image("persist/app", "gone").await;
    let resp = send(node.delete(&format!("/v2/persist/app/manifests/{}", deleted.digest))).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);

    node.restart().await;

    for reference in ["v1", "stable", image.digest.as_str()] {
        let resp = send(node.get(&format!("/v2/persist/app/manifests/{reference}"))).await;
        assert_eq!(resp.status(), StatusCode::OK, "{reference}");
        assert_eq!(header(&resp, "content-type"), OCI_MANIFEST);
        assert_eq!(header(&resp, "docker-content-digest"), image.digest);
        assert!(resp.bytes().await.unwrap().as_ref() == image.manifest.as_slice());
    }
    for (blob, bytes) in &image.layers {
        let resp = send(node.get(&format!("/v2/persist/app/blobs/{}", blob.digest))).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.bytes().await.unwrap().as_ref(), &bytes[..]);
    }
    let resp = send(node.get(&format!("/v2/persist/other/blobs/{other_digest}"))).await;
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &other[..]);
    let resp = send(node.get(&format!("/v2/persist/app/manifests/{}", deleted.digest))).await;
    assert_oci_error(resp, 404, "MANIFEST_UNKNOWN").await;

    let tags = json_body(send(node.get("/v2/persist/app/tags/list")).await).await;
    assert_eq!(tags["tags"], json!(["stable", "v1"]));
    let catalog = json_body(send(node.get("/v2/_catalog")).await).await;
    assert_eq!(
        catalog["repositories"],
        json!(["persist/app", "persist/other"])
    );

    // Still writable after the restart.
    let again = node.push_image("persist/app", "v2").await;
    let resp = send(node.get("/v2/persist/app/manifests/v2")).await;
    assert_eq!(header(&resp, "docker-content-digest"), again.digest);
}

#[tokio::test]
async fn chunked_upload_resumes_after_restart() {
    let mut node = TestNode::start().await;
    let bytes = random_blob(200_000);
    let digest = sha256(&bytes);
    let location = node.start_upload("resume").await;
    let resp = send(
        node.patch(&location)
            .header(CONTENT_RANGE, "0-79999")
            .body(bytes[..80_000].to_vec()),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let location = header(&resp, LOCATION.as_str());
    // A second session, in another repository, that will be cancelled.
    let cancelled = node.start_upload("resume-other").await;

    node.restart().await;

    let resp = send(node.get(&location)).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&resp, RANGE.as_str()), "0-79999");
    let location = header(&resp, LOCATION.as_str());

    // The session keeps its repository.
    let id = upload_id(&location);
    let resp = send(node.get(&format!("/v2/resume-other/blobs/uploads/{id}"))).await;
    assert_oci_error(resp, 404, "BLOB_UPLOAD_UNKNOWN").await;

    // Resume where it stands; a chunk from the wrong offset is still refused.
    let resp = send(
        node.patch(&location)
            .header(CONTENT_RANGE, "0-79999")
            .body(bytes[..80_000].to_vec()),
    )
    .await;
    assert_eq!(header(&resp, RANGE.as_str()), "0-79999");
    assert_oci_error(resp, 416, "BLOB_UPLOAD_INVALID").await;
    let resp = send(
        node.patch(&location)
            .header(CONTENT_RANGE, "80000-149999")
            .body(bytes[80_000..150_000].to_vec()),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&resp, RANGE.as_str()), "0-149999");
    let location = header(&resp, LOCATION.as_str());

    // The digest is checked over bytes from before and after the restart:
    // a digest of the later bytes alone is refused, and the refusal keeps the
    // session as it was.
    let wrong = sha256(&bytes[80_000..150_000]);
    let resp = send(node.put(&with_digest(&location, &wrong))).await;
    assert_oci_error(resp, 400, "DIGEST_INVALID").await;
    let resp = send(node.get(&location)).await;
    assert_eq!(header(&resp, RANGE.as_str()), "0-149999");
    let resp = send(
        node.put(&with_digest(&location, &digest))
            .body(bytes[150_000..].to_vec()),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    let resp = send(node.get(&format!("/v2/resume/blobs/{digest}"))).await;
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &bytes[..]);

    // The other session also survived and can be cancelled.
    let resp = send(node.delete(&cancelled)).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_oci_error(send(node.get(&cancelled)).await, 404, "BLOB_UPLOAD_UNKNOWN").await;
}

#[tokio::test]
async fn sha512_upload_resumes_after_restart() {
    let mut node = TestNode::start().await;
    let bytes = random_blob(30_000);
    let digest = sha512(&bytes);
    let location = node.start_upload("resume512").await;
    let resp = send(node.patch(&location).body(bytes[..10_000].to_vec())).await;
    let location = header(&resp, LOCATION.as_str());
    node.restart().await;
    let resp = send(node.patch(&location).body(bytes[10_000..].to_vec())).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&resp, RANGE.as_str()), "0-29999");
    let location = header(&resp, LOCATION.as_str());
    let resp = send(node.put(&with_digest(&location, &digest))).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = send(node.get(&format!("/v2/resume512/blobs/{digest}"))).await;
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &bytes[..]);
}

#[tokio::test]
async fn a_data_directory_of_a_newer_format_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let config = berth::config::ServeConfig::for_test(dir.path());
    // A directory berth wrote is marked with its format.
    let mut node = TestNode::start_with(tempfile::tempdir().unwrap(), {
        let mut c = config.clone();
        c.data_dir = dir.path().join("old");
        c
    })
    .await;
    node.stop().await;
    assert_eq!(
        std::fs::read_to_string(dir.path().join("old/format")).unwrap(),
        "berth-data 1\n"
    );
    let future = dir.path().join("future");
    std::fs::create_dir_all(&future).unwrap();
    std::fs::write(future.join("format"), "berth-data 2\n").unwrap();
    let mut c = config;
    c.data_dir = future.clone();
    let Err(e) = berth::server::start(&c).await else {
        panic!("a node started on a directory of a newer format");
    };
    let text = e.to_string();
    assert!(text.contains("newer berth (data format 2"), "{text}");
    let left: Vec<_> = std::fs::read_dir(&future).unwrap().collect();
    assert_eq!(left.len(), 1, "the directory was changed: {left:?}");
}

/// A stopping node is no longer ready, yet serves on while an upload
/// session is in use, so a push in progress finishes; then it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_serves_an_upload_in_progress_to_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = berth::config::ServeConfig::for_test(dir.path());
    config.shutdown.delay = std::time::Duration::from_millis(200);
    let mut node = TestNode::start_with(dir, config).await;
    let (first, second) = (random_blob(4096), random_blob(4096));
    let digest = sha256(&[first.clone(), second.clone()].concat());
    let location = node.start_upload("stopping/app").await;
    let resp = send(node.patch(&location).body(first)).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let (http, addr) = (node.http.clone(), node.addr());
    let url = move |path: &str| match path.starts_with("http") {
        true => path.to_owned(),
        false => format!("http://{addr}{path}"),
    };
    let stopping = tokio::spawn(async move {
        node.stop().await;
        node
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let ready = http.get(url("/readyz")).send().await.unwrap();
    assert_eq!(
        ready.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "ready while stopping"
    );
    // Past --shutdown-delay: the session in use keeps the node serving.
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    let resp = http
        .patch(url(&location))
        .body(second)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::ACCEPTED,
        "the second chunk while stopping"
    );
    let location = resp.headers()[LOCATION].to_str().unwrap().to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    let resp = http
        .put(url(&with_digest(&location, &digest)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::CREATED,
        "the commit while stopping"
    );
    let node = tokio::time::timeout(std::time::Duration::from_secs(10), stopping)
        .await
        .expect("stopped within 10 s of the last upload request")
        .unwrap();
    assert!(!node.is_running());
}
