//! `/metrics`: the families an operator needs are there, request counts grow
//! with requests, and no repository name becomes a label.

use crate::common::*;

/// The value of the sample `name` (with its labels, exactly as exposed).
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

pub async fn scrape(node: &TestNode) -> String {
    let resp = send(
        node.get("/metrics")
            .header("accept", "application/openmetrics-text"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "content-type").starts_with("application/openmetrics-text"));
    resp.text().await.unwrap()
}

#[tokio::test]
async fn metrics_show_consensus_storage_and_requests_without_repository_names() {
    let node = TestNode::start().await;
    // A standalone node elects itself at start.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let before = loop {
        let text = scrape(&node).await;
        if sample(&text, "berth_raft_is_leader") == Some(1.0) {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never the leader:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    for family in [
        "berth_raft_term ",
        "berth_raft_commit_index ",
        "berth_raft_applied_index ",
        "berth_replication_under_replicated_blobs ",
        "berth_storage_disk_free_bytes ",
        "berth_storage_local_blobs ",
        "berth_storage_local_blob_bytes ",
        "berth_webhook_endpoints ",
    ] {
        assert!(before.contains(family), "no {family} in:\n{before}");
    }
    assert_eq!(sample(&before, "berth_raft_members"), Some(1.0));
    assert_eq!(sample(&before, "berth_raft_has_leader"), Some(1.0));
    assert!(sample(&before, "berth_storage_disk_size_bytes").unwrap() > 0.0);
    let put = r#"berth_http_requests_total{route="manifest",method="PUT",status="201"}"#;
    assert_eq!(sample(&before, put), None);
    node.push_image("secret-name/app", "v1").await;
    node.push_image("secret-name/app", "v2").await;
    let after = scrape(&node).await;
    assert_eq!(sample(&after, put), Some(2.0), "{after}");
    let uploads = r#"berth_http_requests_total{route="upload_start",method="POST",status="202"}"#;
    assert_eq!(sample(&after, uploads), Some(6.0), "{after}");
    assert!(sample(&after, "berth_http_sent_bytes_total").is_some());
    assert!(sample(&after, "berth_http_received_bytes_total").unwrap() > 140_000.0);
    let histogram = r#"berth_http_request_duration_seconds_count{route="manifest"}"#;
    assert_eq!(sample(&after, histogram), Some(2.0), "{after}");
    assert!(
        !after.contains("secret-name"),
        "a repository name became a label"
    );
    // Each push wrote three blob links and a manifest through the log.
    let writes = sample(&after, "berth_raft_write_duration_seconds_count").unwrap_or(0.0);
    assert!(writes >= 8.0, "{writes} writes timed");
    // Counters only grow, and applied follows commits.
    let applied = |t: &str| sample(t, "berth_raft_applied_index").unwrap();
    assert!(applied(&after) > applied(&before));
    assert_eq!(
        sample(&after, "berth_replication_quorum_failures_total"),
        Some(0.0)
    );
    for family in [
        "berth_replication_relayed_bytes_total",
        r#"berth_replication_fetch_sent_bytes_total{from="store"}"#,
        r#"berth_replication_fetch_sent_bytes_total{from="flight"}"#,
    ] {
        assert_eq!(sample(&after, family), Some(0.0), "{family}");
    }

    // A collection's figures appear once there was one: v1's tag deleted,
    // its manifest and unshared blobs go.
    assert!(!after.contains("berth_gc_last_run"), "{after}");
    let deleted = send(node.delete("/v2/secret-name/app/manifests/v1")).await;
    assert_eq!(deleted.status(), 202);
    let run = send(
        node.post("/_berth/gc")
            .json(&serde_json::json!({ "grace": 0, "untagged": true })),
    )
    .await;
    assert_eq!(run.status(), 200);
    let collected = scrape(&node).await;
    assert_eq!(
        sample(&collected, "berth_gc_last_run_collected_manifests"),
        Some(1.0),
        "{collected}"
    );
    assert_eq!(
        sample(&collected, "berth_gc_last_run_collected_blobs"),
        Some(3.0)
    );
    assert!(sample(&collected, "berth_gc_last_run_finished_timestamp_seconds").unwrap() > 0.0);
}

#[tokio::test]
async fn metrics_off_records_nothing_and_serves_no_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = berth::config::ServeConfig::for_test(dir.path());
    config.metrics = false;
    let node = TestNode::start_with(dir, config).await;
    node.push_image("off/app", "v1").await;
    let resp = send(node.get("/metrics")).await;
    assert_oci_error(resp, 404, "UNSUPPORTED").await;
    assert!(!node.server().registry.metrics().enabled());
    let text = node.server().registry.metrics().encode();
    assert!(!text.contains("berth_http_requests_total{"), "{text}");
}
