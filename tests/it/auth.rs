//! Basic authentication against an htpasswd file.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::common::*;

/// A node whose users are `users` (name, password), cost-4 bcrypt for speed.
async fn node_with_users(users: &[(&str, &str)]) -> (TestNode, tempfile::TempDir) {
    let files = tempfile::tempdir().unwrap();
    write_users(files.path(), users);
    let dir = tempfile::tempdir().unwrap();
    let mut config = berth::config::ServeConfig::for_test(dir.path());
    config.htpasswd = Some(files.path().join("htpasswd"));
    (TestNode::start_with(dir, config).await, files)
}

fn write_users(dir: &std::path::Path, users: &[(&str, &str)]) {
    let text: String = users
        .iter()
        .map(|(u, p)| format!("{u}:{}\n", bcrypt::hash(p, 4).unwrap()))
        .collect();
    std::fs::write(dir.join("htpasswd"), text).unwrap();
}

#[tokio::test]
async fn every_v2_request_needs_a_known_user_and_password() {
    let (node, _files) = node_with_users(&[("alice", "a long password")]).await;
    let anonymous = node.get("/v2/").send().await.unwrap();
    assert_eq!(
        anonymous.headers()["www-authenticate"],
        "Basic realm=\"berth\", charset=\"UTF-8\""
    );
    assert_oci_error(anonymous, 401, "UNAUTHORIZED").await;
    for (user, password) in [("alice", "wrong"), ("mallory", "a long password")] {
        let resp = node
            .get("/v2/")
            .basic_auth(user, Some(password))
            .send()
            .await
            .unwrap();
        assert_oci_error(resp, 401, "UNAUTHORIZED").await;
    }
    let resp = node
        .get("/v2/_catalog")
        .basic_auth("alice", Some("a long password"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // A push with credentials works end to end.
    let data = random_blob(10_000);
    let digest = sha256(&data);
    let resp = node
        .post(&format!("/v2/a/app/blobs/uploads/?digest={digest}"))
        .basic_auth("alice", Some("a long password"))
        .body(data)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    // Probes need no credentials.
    for probe in ["/healthz", "/readyz"] {
        assert_eq!(
            node.get(probe).send().await.unwrap().status(),
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn a_changed_htpasswd_file_is_read_again() {
    let (node, files) = node_with_users(&[("alice", "first")]).await;
    write_users(files.path(), &[("alice", "second"), ("bob", "bobs")]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let resp = node
            .get("/v2/")
            .basic_auth("bob", Some("bobs"))
            .send()
            .await
            .unwrap();
        if resp.status() == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "the new user never got in");
        // Slowly: each refusal counts against this address's failed logins.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let old = node
        .get("/v2/")
        .basic_auth("alice", Some("first"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        old.status(),
        StatusCode::UNAUTHORIZED,
        "the old password still works"
    );
}

#[tokio::test]
async fn a_file_with_other_than_bcrypt_entries_is_refused_at_start() {
    let files = tempfile::tempdir().unwrap();
    let path = files.path().join("htpasswd");
    std::fs::write(&path, "alice:$apr1$salt$hash\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = berth::config::ServeConfig::for_test(dir.path());
    config.htpasswd = Some(path);
    let e = berth::server::start(&config)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("line 1") && e.contains("htpasswd -B"), "{e}");
}

#[tokio::test]
async fn a_source_with_too_many_failed_logins_is_turned_away() {
    let (node, _files) = node_with_users(&[("alice", "right")]).await;
    for _ in 0..10 {
        let resp = node
            .get("/v2/")
            .basic_auth("alice", Some("guess"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    // Even the right password waits now...
    let resp = node
        .get("/v2/")
        .basic_auth("alice", Some("right"))
        .send()
        .await
        .unwrap();
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_oci_error(resp, 429, "TOOMANYREQUESTS").await;
    // ...but only from that address.
    let elsewhere = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let resp = elsewhere
        .get(node.url("/v2/"))
        .basic_auth("alice", Some("right"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}
