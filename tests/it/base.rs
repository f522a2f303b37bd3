//! The `/v2/` base endpoint and headers every response carries.

use crate::common::*;

#[tokio::test]
async fn base_endpoint_answers_with_api_version() {
    let node = TestNode::start().await;
    for path in ["/v2/", "/v2"] {
        let resp = send(node.get(path)).await;
        assert_eq!(resp.status(), 200, "GET {path}");
        assert_eq!(
            header(&resp, "docker-distribution-api-version"),
            "registry/2.0"
        );
    }
    let resp = send(node.head("/v2/")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "docker-distribution-api-version"),
        "registry/2.0"
    );
}

#[tokio::test]
async fn errors_also_carry_api_version() {
    let node = TestNode::start().await;
    let resp = send(node.get("/v2/nothing/here/manifests/latest")).await;
    assert_eq!(
        header(&resp, "docker-distribution-api-version"),
        "registry/2.0"
    );
    assert_oci_error(resp, 404, "MANIFEST_UNKNOWN").await;
}

/// The probes carry it too, as docs/api.md says of every response.
#[tokio::test]
async fn probes_carry_api_version() {
    let node = TestNode::start().await;
    // Ready or not yet: either answer carries it.
    for path in ["/healthz", "/readyz"] {
        let resp = send(node.get(path)).await;
        assert_eq!(
            header(&resp, "docker-distribution-api-version"),
            "registry/2.0",
            "GET {path}"
        );
    }
}
