//! The referrers API: `GET /v2/<name>/referrers/<digest>[?artifactType=…]`.

use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

const SIG: &str = "application/vnd.example.signature";
const SBOM: &str = "application/vnd.example.sbom";
const SBOM_CONFIG: &str = "application/vnd.example.sbom.config.v1+json";

/// Pushes a manifest whose subject is `subject`; returns its descriptor.
async fn push_referrer(
    node: &TestNode,
    repo: &str,
    subject: &PushedImage,
    extra: Value,
    config: &Blob,
) -> (String, usize) {
    let payload = random_blob(64);
    let layer = Blob::new(
        "application/octet-stream",
        node.push_blob(repo, &payload).await,
        payload.len(),
    );
    let mut fields = json!({
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject.digest, "size": subject.manifest.len()},
    });
    fields
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let body = image_manifest(config, &[layer], fields);
    let digest = sha256(&body);
    let resp = node.push_manifest(repo, &digest, OCI_MANIFEST, &body).await;
    assert_eq!(header(&resp, "oci-subject"), subject.digest);
    (digest, body.len())
}

async fn referrers(node: &TestNode, path: &str) -> (reqwest::header::HeaderMap, Value) {
    let resp = send(node.get(path)).await;
    assert_eq!(resp.status(), StatusCode::OK, "GET {path}");
    assert_eq!(
        header(&resp, CONTENT_TYPE.as_str()),
        OCI_INDEX,
        "GET {path}"
    );
    let headers = resp.headers().clone();
    let body = json_body(resp).await;
    assert_eq!(body["schemaVersion"], 2);
    assert_eq!(body["mediaType"], OCI_INDEX);
    assert!(body["manifests"].is_array(), "{body}");
    (headers, body)
}

/// The referrer descriptors of a response, by digest.
fn by_digest(body: &Value) -> std::collections::BTreeMap<String, Value> {
    body["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["digest"].as_str().unwrap().to_owned(), d.clone()))
        .collect()
}

#[tokio::test]
async fn referrers_list_and_filter() {
    let node = TestNode::start().await;
    let subject = node.push_image("refs", "v1").await;
    let empty = Blob::new(OCI_EMPTY, node.push_blob("refs", b"{}").await, 2);
    let sbom_config_bytes = br#"{"tool":"example"}"#;
    let sbom_config = Blob::new(
        SBOM_CONFIG,
        node.push_blob("refs", sbom_config_bytes).await,
        sbom_config_bytes.len(),
    );

    let (sig, sig_size) = push_referrer(
        &node,
        "refs",
        &subject,
        json!({"artifactType": SIG, "annotations": {"org.example.signer": "alice"}}),
        &empty,
    )
    .await;
    let (sbom, sbom_size) = push_referrer(
        &node,
        "refs",
        &subject,
        json!({"artifactType": SBOM}),
        &empty,
    )
    .await;
    // No artifactType: the config's media type stands in for it.
    let (legacy, legacy_size) =
        push_referrer(&node, "refs", &subject, json!({}), &sbom_config).await;
    // A manifest with another subject is not listed.
    let other = node.push_image("refs", "v2").await;
    push_referrer(&node, "refs", &other, json!({"artifactType": SIG}), &empty).await;

    let path = format!("/v2/refs/referrers/{}", subject.digest);
    let (headers, body) = referrers(&node, &path).await;
    assert!(
        headers.get("oci-filters-applied").is_none(),
        "no filter was asked for"
    );
    let found = by_digest(&body);
    assert_eq!(found.len(), 3, "{body}");
    let expect = [
        (&sig, sig_size, SIG),
        (&sbom, sbom_size, SBOM),
        (&legacy, legacy_size, SBOM_CONFIG),
    ];
    for (digest, size, artifact_type) in expect {
        let d = &found[digest.as_str()];
        assert_eq!(d["mediaType"], OCI_MANIFEST, "{d}");
        assert_eq!(d["size"], size, "{d}");
        assert_eq!(d["artifactType"], artifact_type, "{d}");
    }
    assert_eq!(
        found[sig.as_str()]["annotations"],
        json!({"org.example.signer": "alice"})
    );

    let (headers, body) = referrers(&node, &format!("{path}?artifactType={SIG}")).await;
    assert_eq!(header_of(&headers, "oci-filters-applied"), "artifactType");
    assert_eq!(by_digest(&body).keys().collect::<Vec<_>>(), vec![&sig]);

    let (headers, body) = referrers(
        &node,
        &format!("{path}?artifactType={}", SBOM_CONFIG.replace('+', "%2B")),
    )
    .await;
    assert_eq!(header_of(&headers, "oci-filters-applied"), "artifactType");
    assert_eq!(by_digest(&body).keys().collect::<Vec<_>>(), vec![&legacy]);

    let (_, body) = referrers(&node, &format!("{path}?artifactType=application/vnd.none")).await;
    assert_eq!(body["manifests"], json!([]));

    // A deleted referrer drops out of the list.
    let resp = send(node.delete(&format!("/v2/refs/manifests/{sbom}"))).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let (_, body) = referrers(&node, &path).await;
    let found = by_digest(&body);
    assert_eq!(found.len(), 2, "{body}");
    assert!(!found.contains_key(&sbom));
}

#[tokio::test]
async fn referrers_of_an_unknown_subject_are_empty() {
    let node = TestNode::start().await;
    node.push_image("lonely", "v1").await;
    for path in [
        format!("/v2/lonely/referrers/{}", sha256(b"no such manifest")),
        format!("/v2/never/pushed/referrers/{}", sha256(b"x")),
        format!("/v2/lonely/referrers/{}", sha512(b"no such manifest")),
    ] {
        let (_, body) = referrers(&node, &path).await;
        assert_eq!(body["manifests"], json!([]), "{path}");
    }
}

#[tokio::test]
async fn referrers_are_per_repository() {
    let node = TestNode::start().await;
    let subject = node.push_image("one", "v1").await;
    let empty = Blob::new(OCI_EMPTY, node.push_blob("one", b"{}").await, 2);
    push_referrer(&node, "one", &subject, json!({"artifactType": SIG}), &empty).await;
    let (_, body) = referrers(&node, &format!("/v2/one/referrers/{}", subject.digest)).await;
    assert_eq!(body["manifests"].as_array().unwrap().len(), 1);
    let (_, body) = referrers(&node, &format!("/v2/two/referrers/{}", subject.digest)).await;
    assert_eq!(body["manifests"], json!([]));
}
