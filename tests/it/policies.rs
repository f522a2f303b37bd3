//! Repository policies through the HTTP API: an immutable tag is pushed
//! once, then neither moved nor deleted, with a message that names the
//! rule; retention keeps exactly the tags its rule keeps, on every node; a
//! quota refuses the push that crosses it until a delete and a collection
//! free room.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::cluster::TestCluster;
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

/// The tags of `repo` as `node` lists them, sorted.
async fn tags_on(node: &TestNode, repo: &str) -> Vec<String> {
    let body = json_body(send(node.get(&format!("/v2/{repo}/tags/list"))).await).await;
    let mut tags: Vec<String> = body["tags"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    tags.sort();
    tags
}

async fn change_policy(node: &TestNode, change: Value) {
    let resp = send(node.post("/_berth/policies").json(&change)).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT, "{change}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_keeps_exactly_the_right_tags_on_every_node() {
    let cluster = TestCluster::start(3).await;
    let node = &cluster.nodes[0];
    // Pushed a second apart: push times order them.
    let mut pushed = Vec::new();
    for tag in ["v1", "v2", "v3", "v4"] {
        pushed.push(node.push_image("acme/app", tag).await);
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    node.push_manifest("acme/app", "latest", OCI_MANIFEST, &pushed[0].manifest)
        .await;
    node.push_image("acme/other", "v1").await;
    node.push_image("acme/other", "v2").await;
    node.push_image("elsewhere/app", "v1").await;
    node.push_image("elsewhere/app", "v2").await;
    change_policy(
        node,
        json!({"set_immutable": {"scope": {"repository": "acme/app"}, "patterns": ["v2"]}}),
    )
    .await;

    // A preview of a rule not yet set changes nothing.
    let rule = json!({"tags": ["v*"], "keep_last": 1});
    let preview = json!({"scope": "acme/*", "rule": rule});
    let resp = send(
        cluster.nodes[1]
            .post("/_berth/retention/preview")
            .json(&preview),
    )
    .await;
    let plan = json_body(resp).await;
    let removed: Vec<String> = plan["remove"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            format!(
                "{}:{}",
                t["repository"].as_str().unwrap(),
                t["tag"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(removed, ["acme/app:v1", "acme/app:v3", "acme/other:v1"]);
    assert_eq!(plan["protected"][0][0]["tag"], "v2");
    assert_eq!(plan["protected"][0][1], "acme/app v2");
    assert_eq!(
        tags_on(node, "acme/app").await,
        ["latest", "v1", "v2", "v3", "v4"]
    );
    let resp = send(
        cluster.nodes[1]
            .post("/_berth/retention/preview")
            .json(&json!({"rule": rule})),
    )
    .await;
    assert_oci_error(resp, 400, "UNSUPPORTED").await;

    change_policy(
        &cluster.nodes[2],
        json!({"set_retention": {"scope": {"namespace": "acme"}, "rule": rule}}),
    )
    .await;
    let shown = json_body(send(node.get("/_berth/policies")).await).await;
    assert_eq!(shown["retention"][0]["rule"]["keep_last"], 1);
    let outcome = json_body(
        send(
            cluster.nodes[1]
                .post("/_berth/gc")
                .json(&json!({"grace": 0})),
        )
        .await,
    )
    .await;
    assert!(outcome["collected"]["finished"].is_u64(), "{outcome}");
    for n in &cluster.nodes {
        assert_eq!(tags_on(n, "acme/app").await, ["latest", "v2", "v4"]);
        assert_eq!(tags_on(n, "acme/other").await, ["v2"]);
        assert_eq!(tags_on(n, "elsewhere/app").await, ["v1", "v2"]);
        // v3's manifest went with its tag; v1's stays under `latest`.
        let resp = send(n.get(&format!("/v2/acme/app/manifests/{}", pushed[2].digest))).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let resp = send(n.get(&format!("/v2/acme/app/manifests/{}", pushed[0].digest))).await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    // Applied again, the rule finds nothing more to do.
    send(node.post("/_berth/gc").json(&json!({"grace": 0}))).await;
    assert_eq!(tags_on(node, "acme/app").await, ["latest", "v2", "v4"]);
    // A rule with nothing to keep by is refused.
    let bad = json!({"set_retention": {"scope": {"namespace": "acme"}, "rule": {"tags": ["*"]}}});
    let resp = send(node.post("/_berth/policies").json(&bad)).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

/// Each namespace's usage as `node` reports it.
async fn usage_on(node: &TestNode, namespace: &str) -> (u64, Option<u64>) {
    let all = json_body(send(node.get("/_berth/quotas")).await).await;
    all.as_array()
        .unwrap()
        .iter()
        .find(|u| u["namespace"] == namespace)
        .map_or((0, None), |u| {
            (u["bytes"].as_u64().unwrap(), u["limit"].as_u64())
        })
}

fn image_bytes(image: &PushedImage) -> u64 {
    (image.config.size + image.layers.iter().map(|(b, _)| b.size).sum::<usize>()) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quota_refuses_the_push_that_crosses_it_until_a_delete_and_gc_free_room() {
    let cluster = TestCluster::start(3).await;
    let [a, b, c] = [&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]];
    let first = a.push_image("team/app", "one").await;
    let size = image_bytes(&first);
    assert_eq!(usage_on(c, "team").await, (size, None));
    // Room for one more image, not two.
    let limit = 2 * size + size / 2;
    change_policy(
        b,
        json!({"set_quota": {"namespace": "team", "bytes": limit}}),
    )
    .await;
    // Its own tag gives it its own config blob.
    let second = b.push_image("team/tool", "two").await;
    assert_eq!(usage_on(a, "team").await, (2 * size, Some(limit)));
    // The third image's blobs go up; its manifest is refused at commit.
    let config = c.push_blob("team/app", b"{\"third\":true}").await;
    let layer_bytes = random_blob(70_000);
    let layer = c.push_blob("team/app", &layer_bytes).await;
    let manifest = image_manifest(
        &Blob::new(OCI_CONFIG, config, 15),
        &[Blob::new(OCI_LAYER, layer, layer_bytes.len())],
        json!({}),
    );
    let put = || {
        c.put("/v2/team/app/manifests/three")
            .header("content-type", OCI_MANIFEST)
            .body(manifest.clone())
    };
    let body = assert_oci_error(send(put()).await, 403, "DENIED").await;
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("namespace team"), "{message}");
    assert!(message.contains(&format!("({limit} bytes)")), "{message}");
    // Re-tagging what is stored adds no bytes and is accepted.
    a.push_manifest("team/app", "again", OCI_MANIFEST, &first.manifest)
        .await;
    // Other namespaces are not bounded.
    c.push_image("free/app", "one").await;

    // Lowered below the usage, the limit refuses uploads up front.
    change_policy(
        a,
        json!({"set_quota": {"namespace": "team", "bytes": size}}),
    )
    .await;
    // Once b has applied the change (its listing waits for that), b refuses.
    assert_eq!(usage_on(b, "team").await, (2 * size, Some(size)));
    let resp = send(b.post("/v2/team/app/blobs/uploads/")).await;
    let body = assert_oci_error(resp, 403, "DENIED").await;
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("uses"), "{message}");
    change_policy(
        a,
        json!({"set_quota": {"namespace": "team", "bytes": limit}}),
    )
    .await;

    // Deleting the tags leaves the manifest (and its bytes) until a
    // collection of untagged manifests removes it.
    let resp = send(b.delete("/v2/team/tool/manifests/two")).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(usage_on(c, "team").await.0, 2 * size);
    assert_oci_error(send(put()).await, 403, "DENIED").await;
    let gc = json!({"grace": 0, "untagged": true});
    let resp = send(a.post("/_berth/gc").json(&gc)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(usage_on(b, "team").await.0, size);
    // The refused image's blobs, unreferenced, went with the collection: the
    // client uploads them again, as it would after MANIFEST_BLOB_UNKNOWN.
    assert_oci_error(send(put()).await, 400, "MANIFEST_BLOB_UNKNOWN").await;
    c.push_blob("team/app", b"{\"third\":true}").await;
    c.push_blob("team/app", &layer_bytes).await;
    let resp = send(put()).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = send(c.get(&format!("/v2/team/tool/manifests/{}", second.digest))).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}
