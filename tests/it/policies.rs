//! Immutable tags through the HTTP API: a covered tag is pushed once, then
//! neither moved nor deleted, with a message that names the rule.

use reqwest::StatusCode;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn an_immutable_tag_refuses_moves_and_deletes_and_names_its_rule() {
    let node = TestNode::start().await;
    let rule =
        json!({"set_immutable": {"scope": {"namespace": "acme"}, "patterns": ["*", "!latest"]}});
    let resp = send(node.post("/_berth/policies").json(&rule)).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let shown = json_body(send(node.get("/_berth/policies")).await).await;
    assert_eq!(shown["immutable"][0]["patterns"], json!(["*", "!latest"]));

    let first = node.push_image("acme/app", "v1").await;
    // The same manifest again is fine.
    node.push_manifest("acme/app", "v1", OCI_MANIFEST, &first.manifest)
        .await;
    let other = node.push_image("acme/app", "v2").await;
    let resp = send(
        node.put("/v2/acme/app/manifests/v1")
            .header("content-type", OCI_MANIFEST)
            .body(other.manifest.clone()),
    )
    .await;
    let body = assert_oci_error(resp, 403, "DENIED").await;
    let message = body["errors"][0]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("tag v1 is immutable (rule acme/* *)"),
        "{message}"
    );
    let resp = send(node.delete("/v2/acme/app/manifests/v1")).await;
    assert_oci_error(resp, 403, "DENIED").await;
    let resp = send(node.delete(&format!("/v2/acme/app/manifests/{}", first.digest))).await;
    assert_oci_error(resp, 403, "DENIED").await;
    // v1 still names the first manifest; `latest` moves freely.
    let resp = send(node.head("/v2/acme/app/manifests/v1")).await;
    assert_eq!(header(&resp, "docker-content-digest"), first.digest);
    for image in [&first, &other] {
        node.push_manifest("acme/app", "latest", OCI_MANIFEST, &image.manifest)
            .await;
    }
    // A policy that is not JSON for one is refused.
    let resp = send(node.post("/_berth/policies").body("{}")).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // Without the rule, the tag moves.
    let clear = json!({"set_immutable": {"scope": {"namespace": "acme"}, "patterns": []}});
    let resp = send(node.post("/_berth/policies").json(&clear)).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    node.push_manifest("acme/app", "v1", OCI_MANIFEST, &other.manifest)
        .await;
}
