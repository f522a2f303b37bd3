//! Basic authentication against an htpasswd file.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::common::*;

/// A node whose users are `users` (name, password), cost-4 bcrypt for speed;
/// alice administers it, so these tests see sign-in alone.
async fn node_with_users(users: &[(&str, &str)]) -> (TestNode, tempfile::TempDir) {
    let files = tempfile::tempdir().unwrap();
    write_users(files.path(), users);
    let dir = tempfile::tempdir().unwrap();
    let mut config = berth::config::ServeConfig::for_test(dir.path());
    config.htpasswd = Some(files.path().join("htpasswd"));
    config.admins.insert("alice".into());
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
        format!(
            "Bearer realm=\"http://{}/auth/token\",service=\"berth\"",
            node.addr()
        )
        .as_str()
    );
    assert_oci_error(anonymous, 401, "UNAUTHORIZED").await;
    let pull = node.get("/v2/a/app/tags/list").send().await.unwrap();
    assert!(
        pull.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .ends_with(",scope=\"repository:a/app:pull\""),
        "{:?}",
        pull.headers()
    );
    for (user, password) in [("alice", "wrong"), ("mallory", "a long password")] {
        let resp = node.get_as("/v2/", user, password).await;
        assert_oci_error(resp, 401, "UNAUTHORIZED").await;
    }
    let resp = node
        .get_as("/v2/_catalog", "alice", "a long password")
        .await;
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
    node.until_ready().await;
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
        let resp = node.get_as("/v2/", "bob", "bobs").await;
        if resp.status() == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "the new user never got in");
        // Slowly: each refusal counts against this address's failed logins.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let old = node.get_as("/v2/", "alice", "first").await;
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
        let resp = node.get_as("/v2/", "alice", "guess").await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    // Even the right password waits now...
    let resp = node.get_as("/v2/", "alice", "right").await;
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
    let resp = send(
        elsewhere
            .get(node.url("/v2/"))
            .basic_auth("alice", Some("right")),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn parallel_guesses_get_no_more_checks_than_serial_ones() {
    // A hash as slow as real ones, so every guess is under way before the
    // first is refused.
    let files = tempfile::tempdir().unwrap();
    let hash = bcrypt::hash("right", 10).unwrap();
    std::fs::write(files.path().join("htpasswd"), format!("alice:{hash}\n")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = berth::config::ServeConfig::for_test(dir.path());
    config.htpasswd = Some(files.path().join("htpasswd"));
    let node = TestNode::start_with(dir, config).await;
    let passwords: Vec<String> = (0..50).map(|i| format!("guess {i}")).collect();
    let guesses = passwords.iter().map(|p| node.get_as("/v2/", "alice", p));
    let statuses: Vec<StatusCode> = futures_util::future::join_all(guesses)
        .await
        .iter()
        .map(|r| r.status())
        .collect();
    let checked = statuses
        .iter()
        .filter(|&&s| s == StatusCode::UNAUTHORIZED)
        .count();
    let refused = statuses
        .iter()
        .filter(|&&s| s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((checked, refused), (10, 40), "{statuses:?}");
}

/// A token from the node's endpoint for `scopes`, signed in as alice.
async fn token(node: &TestNode, scopes: &[&str]) -> String {
    let query: String = scopes.iter().map(|s| format!("&scope={s}")).collect();
    let resp = node
        .get_as(&format!("/auth/token?service=berth{query}"), "alice", "pw")
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["expires_in"], 300);
    body["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn tokens_grant_exactly_their_scopes() {
    let (node, _files) = node_with_users(&[("alice", "pw")]).await;
    let push = token(&node, &["repository:a/app:pull,push"]).await;
    let data = random_blob(5000);
    let digest = sha256(&data);
    let resp = node
        .post(&format!("/v2/a/app/blobs/uploads/?digest={digest}"))
        .bearer_auth(&push)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = node
        .get(&format!("/v2/a/app/blobs/{digest}"))
        .bearer_auth(&push)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &data[..]);

    // Another repository, or an action not granted: asked to get a new token.
    let other = node
        .get(&format!("/v2/b/app/blobs/{digest}"))
        .bearer_auth(&push)
        .send()
        .await
        .unwrap();
    let challenge = other.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.contains("scope=\"repository:b/app:pull\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert_oci_error(other, 401, "UNAUTHORIZED").await;
    let pull_only = token(&node, &["repository:a/app:pull"]).await;
    let resp = node
        .delete(&format!("/v2/a/app/blobs/{digest}"))
        .bearer_auth(&pull_only)
        .send()
        .await
        .unwrap();
    assert_oci_error(resp, 401, "UNAUTHORIZED").await;
    let resp = node
        .get("/v2/_catalog")
        .bearer_auth(&push)
        .send()
        .await
        .unwrap();
    assert_oci_error(resp, 401, "UNAUTHORIZED").await;
    let catalog = token(&node, &["registry:catalog:*"]).await;
    let resp = node
        .get("/v2/_catalog")
        .bearer_auth(&catalog)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // Forged, or meant for another service: refused.
    let mut forged = push.clone();
    forged.insert(forged.len() - 3, 'x');
    let resp = node
        .get("/v2/a/app/tags/list")
        .bearer_auth(&forged)
        .send()
        .await
        .unwrap();
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    let resp = node
        .get_as(
            "/auth/token?service=elsewhere&scope=repository:a/app:pull",
            "alice",
            "pw",
        )
        .await;
    assert_oci_error(resp, 403, "DENIED").await;
    let resp = node
        .get_as(
            "/auth/token?service=berth&scope=repository:a/app:pull",
            "alice",
            "nope",
        )
        .await;
    assert_oci_error(resp, 401, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn a_refresh_token_stands_in_for_the_password() {
    let (node, _files) = node_with_users(&[("alice", "pw")]).await;
    let form = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", v.replace(' ', "+")))
            .collect::<Vec<_>>()
            .join("&")
    };
    let resp = node
        .post("/auth/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "pw"),
            ("service", "berth"),
            ("client_id", "test"),
            ("access_type", "offline"),
            ("scope", "repository:a/app:pull"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: serde_json::Value = resp.json().await.unwrap();
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    let resp = node
        .post("/auth/token")
        .body(form(&[("grant_type", "client_credentials")]))
        .send()
        .await
        .unwrap();
    assert_oci_error(resp, 400, "UNSUPPORTED").await;
    // The refresh token is no access token...
    let resp = node.get("/v2/").bearer_auth(&refresh).send().await.unwrap();
    assert_oci_error(resp, 401, "UNAUTHORIZED").await;
    // ...but buys one.
    let resp = node
        .post("/auth/token")
        .body(form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("service", "berth"),
            ("scope", "repository:a/app:pull repository:b/app:pull"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: serde_json::Value = resp.json().await.unwrap();
    let access = body["access_token"].as_str().unwrap();
    let resp = node
        .get("/v2/b/app/tags/list")
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_oci_error(resp, 404, "NAME_UNKNOWN").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_from_one_node_is_good_on_every_node() {
    let files = tempfile::tempdir().unwrap();
    write_users(files.path(), &[("alice", "pw")]);
    let path = files.path().join("htpasswd");
    let cluster = crate::cluster::TestCluster::with_config(2, move |c| {
        c.htpasswd = Some(path.clone());
        c.admins.insert("alice".into());
    })
    .await;
    let token = token(&cluster.nodes[0], &["repository:c/app:pull"]).await;
    let resp = cluster.nodes[1]
        .get("/v2/c/app/tags/list")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_oci_error(resp, 404, "NAME_UNKNOWN").await;
}
