//! Manifest push, pull, negotiation and deletion.

use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::StatusCode;
use serde_json::json;

use crate::common::*;

/// Pushes a config and one layer to `repo`; returns their descriptors.
async fn blobs_for(
    node: &TestNode,
    repo: &str,
    config_type: &str,
    layer_type: &str,
) -> (Blob, Blob) {
    let config = br#"{"os":"linux","architecture":"arm64"}"#;
    let layer = random_blob(3000);
    let c = Blob::new(
        config_type,
        node.push_blob(repo, config).await,
        config.len(),
    );
    let l = Blob::new(layer_type, node.push_blob(repo, &layer).await, layer.len());
    (c, l)
}

/// GETs and HEADs a manifest by `reference` and checks it is exactly `body`.
async fn assert_manifest(
    node: &TestNode,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) {
    let path = format!("/v2/{repo}/manifests/{reference}");
    let digest = sha256(body);
    let resp = send(node.get(&path)).await;
    assert_eq!(resp.status(), StatusCode::OK, "GET {path}");
    assert_eq!(
        header(&resp, CONTENT_TYPE.as_str()),
        media_type,
        "GET {path}"
    );
    assert_eq!(header(&resp, "docker-content-digest"), digest, "GET {path}");
    assert_eq!(
        header(&resp, CONTENT_LENGTH.as_str()),
        body.len().to_string()
    );
    assert!(
        resp.bytes().await.unwrap().as_ref() == body,
        "GET {path}: bytes differ"
    );
    let resp = send(node.head(&path)).await;
    assert_eq!(resp.status(), StatusCode::OK, "HEAD {path}");
    assert_eq!(
        header(&resp, CONTENT_TYPE.as_str()),
        media_type,
        "HEAD {path}"
    );
    assert_eq!(
        header(&resp, "docker-content-digest"),
        digest,
        "HEAD {path}"
    );
    assert_eq!(
        header(&resp, CONTENT_LENGTH.as_str()),
        body.len().to_string(),
        "HEAD {path}"
    );
    assert!(resp.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn exact_bytes_are_kept_by_tag_and_by_digest() {
    let node = TestNode::start().await;
    let (config, layer) = blobs_for(&node, "exact", OCI_CONFIG, OCI_LAYER).await;
    // Odd whitespace and key order: re-serializing would change the digest.
    let body = format!(
        "{{\n\t\"layers\" : [ {{\"size\":{},  \"digest\":\"{}\",\"mediaType\":\"{OCI_LAYER}\"}} ],\r\n  \
         \"config\":{{\"digest\":\"{}\",\"size\":{}, \"mediaType\":\"{OCI_CONFIG}\"}},\n\
         \"mediaType\":   \"{OCI_MANIFEST}\",   \"schemaVersion\":2\n}}\n\n",
        layer.size, layer.digest, config.digest, config.size
    )
    .into_bytes();
    let digest = sha256(&body);
    let resp = node.push_manifest("exact", "v1", OCI_MANIFEST, &body).await;
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    let location = header(&resp, LOCATION.as_str());
    assert!(
        location.ends_with(&format!("/v2/exact/manifests/{digest}")),
        "{location}"
    );
    assert_manifest(&node, "exact", "v1", OCI_MANIFEST, &body).await;
    assert_manifest(&node, "exact", &digest, OCI_MANIFEST, &body).await;
    assert_eq!(send(node.get(&location)).await.status(), StatusCode::OK);

    // The same bytes pushed by digest land on the same digest.
    let resp = node
        .push_manifest("exact", &digest, OCI_MANIFEST, &body)
        .await;
    assert_eq!(header(&resp, "docker-content-digest"), digest);

    // A manifest pushed only by digest is served by digest.
    let other = image_manifest(&config, &[layer], json!({"annotations": {"k": "v"}}));
    let other_digest = sha256(&other);
    let resp = node
        .push_manifest("exact", &other_digest, OCI_MANIFEST, &other)
        .await;
    assert_eq!(header(&resp, "docker-content-digest"), other_digest);
    assert_manifest(&node, "exact", &other_digest, OCI_MANIFEST, &other).await;
}

#[tokio::test]
async fn tags_move_when_pushed_again() {
    let node = TestNode::start().await;
    let first = node.push_image("moving", "latest").await;
    let second = node.push_image("moving", "latest").await;
    assert_ne!(first.digest, second.digest);
    assert_manifest(&node, "moving", "latest", OCI_MANIFEST, &second.manifest).await;
    assert_manifest(
        &node,
        "moving",
        &first.digest,
        OCI_MANIFEST,
        &first.manifest,
    )
    .await;
}

#[tokio::test]
async fn oci_manifest_without_media_type_field() {
    // umoci writes no mediaType; skopeo pushes it byte for byte with the
    // Content-Type header naming the type.
    let node = TestNode::start().await;
    let (config, layer) = blobs_for(&node, "umoci", OCI_CONFIG, OCI_LAYER).await;
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
    }))
    .unwrap();
    node.push_manifest("umoci", "v1", OCI_MANIFEST, &body).await;
    assert_manifest(&node, "umoci", "v1", OCI_MANIFEST, &body).await;
}

#[tokio::test]
async fn index_needs_its_children() {
    let node = TestNode::start().await;
    let amd = node.push_image("multi", "amd64").await;
    let (config, layer) = blobs_for(&node, "multi", OCI_CONFIG, OCI_LAYER).await;
    let arm = image_manifest(&config, &[layer], json!({}));
    let arm_desc = Blob::new(OCI_MANIFEST, sha256(&arm), arm.len());
    let amd_desc = Blob::new(OCI_MANIFEST, amd.digest.clone(), amd.manifest.len());
    let index = index_manifest(&[amd_desc, arm_desc], json!({}));

    let resp = send(
        node.put("/v2/multi/manifests/all")
            .header(CONTENT_TYPE, OCI_INDEX)
            .body(index.clone()),
    )
    .await;
    let body = assert_oci_error(resp, 400, "MANIFEST_BLOB_UNKNOWN").await;
    assert!(
        body.to_string().contains(&sha256(&arm)),
        "error names the missing child: {body}"
    );
    assert_oci_error(
        send(node.get("/v2/multi/manifests/all")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;

    // Children go first, by digest, as skopeo does.
    node.push_manifest("multi", &sha256(&arm), OCI_MANIFEST, &arm)
        .await;
    node.push_manifest("multi", "all", OCI_INDEX, &index).await;
    assert_manifest(&node, "multi", "all", OCI_INDEX, &index).await;
}

#[tokio::test]
async fn docker_schema2_manifest_and_list() {
    let node = TestNode::start().await;
    let (config, layer) = blobs_for(&node, "docker", DOCKER_CONFIG, DOCKER_LAYER).await;
    let manifest = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
    }))
    .unwrap();
    let digest = sha256(&manifest);
    node.push_manifest("docker", "v2", DOCKER_MANIFEST, &manifest)
        .await;
    assert_manifest(&node, "docker", "v2", DOCKER_MANIFEST, &manifest).await;

    let list = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [{
            "mediaType": DOCKER_MANIFEST,
            "digest": digest,
            "size": manifest.len(),
            "platform": {"architecture": "arm64", "os": "linux"},
        }],
    }))
    .unwrap();
    node.push_manifest("docker", "list", DOCKER_LIST, &list)
        .await;
    assert_manifest(&node, "docker", "list", DOCKER_LIST, &list).await;
}

#[tokio::test]
async fn artifact_with_subject_reports_oci_subject() {
    let node = TestNode::start().await;
    let subject = node.push_image("art", "v1").await;
    let empty = Blob::new(OCI_EMPTY, node.push_blob("art", b"{}").await, 2);
    let payload = b"signature bytes";
    let layer = Blob::new(
        "application/vnd.example.sig",
        node.push_blob("art", payload).await,
        payload.len(),
    );
    let artifact = image_manifest(
        &empty,
        &[layer],
        json!({
            "artifactType": "application/vnd.example.sig",
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject.digest, "size": subject.manifest.len()},
        }),
    );
    let resp = node
        .push_manifest("art", &sha256(&artifact), OCI_MANIFEST, &artifact)
        .await;
    assert_eq!(header(&resp, "oci-subject"), subject.digest);
    assert_manifest(&node, "art", &sha256(&artifact), OCI_MANIFEST, &artifact).await;

    // A manifest without a subject gets no OCI-Subject header.
    let resp = node
        .push_manifest("art", "plain", OCI_MANIFEST, &subject.manifest)
        .await;
    assert!(resp.headers().get("oci-subject").is_none());

    // The subject need not exist in the repository.
    let dangling = image_manifest(
        &empty,
        &[],
        json!({
            "artifactType": "application/vnd.example.sbom",
            "subject": {"mediaType": OCI_MANIFEST, "digest": sha256(b"absent"), "size": 6},
        }),
    );
    let resp = node
        .push_manifest("art", &sha256(&dangling), OCI_MANIFEST, &dangling)
        .await;
    assert_eq!(header(&resp, "oci-subject"), sha256(b"absent"));
}

#[tokio::test]
async fn accept_negotiation() {
    let node = TestNode::start().await;
    let image = node.push_image("accept", "v1").await;
    let path = "/v2/accept/manifests/v1";

    let resp = send(node.get(path).header(ACCEPT, DOCKER_MANIFEST)).await;
    assert_oci_error(resp, 404, "MANIFEST_UNKNOWN").await;
    let resp = send(node.head(path).header(ACCEPT, DOCKER_MANIFEST)).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let by_digest = format!("/v2/accept/manifests/{}", image.digest);
    let resp = send(
        node.get(&by_digest)
            .header(ACCEPT, format!("{DOCKER_MANIFEST}, {DOCKER_LIST}")),
    )
    .await;
    assert_oci_error(resp, 404, "MANIFEST_UNKNOWN").await;

    let accepted: Vec<Vec<String>> = vec![
        vec!["*/*".into()],
        vec![OCI_MANIFEST.into()],
        vec!["application/*".into()],
        vec![format!("{OCI_MANIFEST}; q=0.9")],
        // ctr: one comma-joined line ending in */*.
        vec![format!(
            "{DOCKER_MANIFEST}, {DOCKER_LIST}, {OCI_INDEX}, */*"
        )],
        // skopeo and podman: six separate lines.
        [
            OCI_MANIFEST,
            OCI_INDEX,
            DOCKER_MANIFEST,
            DOCKER_LIST,
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            "application/vnd.docker.distribution.manifest.v1+json",
        ]
        .map(String::from)
        .to_vec(),
        // The matching type on the last of several lines.
        [DOCKER_MANIFEST, DOCKER_LIST, OCI_MANIFEST]
            .map(String::from)
            .to_vec(),
    ];
    for lines in accepted {
        for reference in ["v1", image.digest.as_str()] {
            let path = format!("/v2/accept/manifests/{reference}");
            let mut req = node.get(&path);
            for line in &lines {
                req = req.header(ACCEPT, line);
            }
            let resp = send(req).await;
            assert_eq!(
                resp.status(),
                StatusCode::OK,
                "Accept {lines:?} on {reference}"
            );
            assert_eq!(header(&resp, CONTENT_TYPE.as_str()), OCI_MANIFEST);
            assert!(resp.bytes().await.unwrap().as_ref() == image.manifest.as_slice());
        }
    }
}

#[tokio::test]
async fn oversized_manifest_is_refused() {
    let node = TestNode::start().await;
    let (config, layer) = blobs_for(&node, "big", OCI_CONFIG, OCI_LAYER).await;
    let filler = "x".repeat(5 * 1024 * 1024);
    let body = image_manifest(
        &config,
        &[layer],
        json!({"annotations": {"filler": filler}}),
    );
    assert!(body.len() > 5 * 1024 * 1024);
    let resp = send(
        node.put("/v2/big/manifests/huge")
            .header(CONTENT_TYPE, OCI_MANIFEST)
            .body(body),
    )
    .await;
    assert_oci_error(resp, 413, "MANIFEST_INVALID").await;
    assert_oci_error(
        send(node.get("/v2/big/manifests/huge")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    // A manifest just under the limit is fine.
    let (config, layer) = blobs_for(&node, "big", OCI_CONFIG, OCI_LAYER).await;
    let filler = "y".repeat(4 * 1024 * 1024 - 2048);
    let body = image_manifest(
        &config,
        &[layer],
        json!({"annotations": {"filler": filler}}),
    );
    assert!(body.len() <= 4 * 1024 * 1024);
    node.push_manifest("big", "large", OCI_MANIFEST, &body)
        .await;
    assert_manifest(&node, "big", "large", OCI_MANIFEST, &body).await;
}

#[tokio::test]
async fn manifest_blobs_must_be_in_the_repository() {
    let node = TestNode::start().await;
    let (config, layer) = blobs_for(&node, "known", OCI_CONFIG, OCI_LAYER).await;
    let missing = Blob::new(OCI_LAYER, sha256(b"never pushed"), 12);
    let body = image_manifest(&config, &[layer.clone(), missing.clone()], json!({}));
    let resp = send(
        node.put("/v2/known/manifests/v1")
            .header(CONTENT_TYPE, OCI_MANIFEST)
            .body(body),
    )
    .await;
    let err = assert_oci_error(resp, 400, "MANIFEST_BLOB_UNKNOWN").await;
    assert!(
        err.to_string().contains(&missing.digest),
        "error names the missing blob: {err}"
    );

    // Blobs held only by another repository do not count.
    let body = image_manifest(&config, &[layer], json!({}));
    let resp = send(
        node.put("/v2/unknown/manifests/v1")
            .header(CONTENT_TYPE, OCI_MANIFEST)
            .body(body),
    )
    .await;
    assert_oci_error(resp, 400, "MANIFEST_BLOB_UNKNOWN").await;
    // Nothing was created by the rejected pushes.
    assert_oci_error(
        send(node.get("/v2/known/manifests/v1")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_oci_error(
        send(node.get("/v2/unknown/tags/list")).await,
        404,
        "NAME_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn put_by_mismatching_digest_is_refused() {
    let node = TestNode::start().await;
    let image = node.push_image("mismatch", "v1").await;
    let wrong = sha256(b"not the manifest");
    let resp = send(
        node.put(&format!("/v2/mismatch/manifests/{wrong}"))
            .header(CONTENT_TYPE, OCI_MANIFEST)
            .body(image.manifest.clone()),
    )
    .await;
    assert_oci_error(resp, 400, "DIGEST_INVALID").await;
    let resp = send(node.get(&format!("/v2/mismatch/manifests/{wrong}"))).await;
    assert_oci_error(resp, 404, "MANIFEST_UNKNOWN").await;
}

#[tokio::test]
async fn delete_by_digest_removes_every_tag_on_it() {
    let node = TestNode::start().await;
    let image = node.push_image("deldig", "t1").await;
    node.push_manifest("deldig", "t2", OCI_MANIFEST, &image.manifest)
        .await;
    let keep = node.push_image("deldig", "t3").await;
    let by_digest = format!("/v2/deldig/manifests/{}", image.digest);
    let resp = send(node.delete(&by_digest)).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    for path in [
        by_digest.as_str(),
        "/v2/deldig/manifests/t1",
        "/v2/deldig/manifests/t2",
    ] {
        assert_oci_error(send(node.get(path)).await, 404, "MANIFEST_UNKNOWN").await;
        assert_eq!(
            send(node.head(path)).await.status(),
            StatusCode::NOT_FOUND,
            "HEAD {path}"
        );
    }
    let tags = json_body(send(node.get("/v2/deldig/tags/list")).await).await;
    assert_eq!(tags["tags"], json!(["t3"]));
    assert_manifest(&node, "deldig", "t3", OCI_MANIFEST, &keep.manifest).await;
    assert_oci_error(send(node.delete(&by_digest)).await, 404, "MANIFEST_UNKNOWN").await;
}

#[tokio::test]
async fn delete_by_tag_removes_only_the_tag() {
    let node = TestNode::start().await;
    let image = node.push_image("deltag", "t1").await;
    node.push_manifest("deltag", "t2", OCI_MANIFEST, &image.manifest)
        .await;
    let resp = send(node.delete("/v2/deltag/manifests/t1")).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_oci_error(
        send(node.get("/v2/deltag/manifests/t1")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert_manifest(&node, "deltag", "t2", OCI_MANIFEST, &image.manifest).await;
    assert_manifest(
        &node,
        "deltag",
        &image.digest,
        OCI_MANIFEST,
        &image.manifest,
    )
    .await;
    let tags = json_body(send(node.get("/v2/deltag/tags/list")).await).await;
    assert_eq!(tags["tags"], json!(["t2"]));
    assert_oci_error(
        send(node.delete("/v2/deltag/manifests/t1")).await,
        404,
        "MANIFEST_UNKNOWN",
    )
    .await;
}
