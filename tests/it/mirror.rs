//! Pull-through mirrors: a mirror's namespace takes no pushes, with a
//! message that says where to push instead; every other repository on the
//! same node takes pushes as before. The mirrors come from the
//! configuration file.

use std::time::Duration;

use crate::common::*;

#[tokio::test]
async fn a_mirror_namespace_refuses_pushes_and_the_rest_take_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("berth.yaml");
    let data = dir.path().join("data");
    std::fs::write(
        &file,
        "mirrors:\n  - name: docker.io\n    url: https://registry-1.docker.io\n    default: true\n    tag-ttl: 60\n",
    )
    .unwrap();
    let args = berth::config::ServeArgs {
        config: Some(file),
        data_dir: Some(data),
        plain_http: Some(true),
        ..Default::default()
    };
    let resolved = args.resolve().unwrap();
    assert_eq!(resolved.mirrors[0].tag_ttl, Duration::from_secs(60));
    let mut config = berth::config::ServeConfig::for_test(dir.path());
    config.mirrors = resolved.mirrors;
    let node = TestNode::start_with(dir, config).await;

    let resp = send(node.post("/v2/docker.io/library/alpine/blobs/uploads/")).await;
    let body = assert_oci_error(resp, 403, "DENIED").await;
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("pull-through mirror docker.io of https://registry-1.docker.io/"),
        "{message}"
    );
    let resp = send(
        node.put("/v2/docker.io/library/alpine/manifests/latest")
            .header("content-type", OCI_MANIFEST)
            .body("{}"),
    )
    .await;
    assert_oci_error(resp, 403, "DENIED").await;
    // A name that only starts like the mirror is no part of it.
    node.push_image("docker.iox/app", "v1").await;
    node.push_image("acme/app", "v1").await;
}
