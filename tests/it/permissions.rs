//! Who may do what: the permission matrix over every caller, action and
//! kind of repository, with basic credentials and with tokens; the admin
//! API's own permissions; and robot accounts, whose revocation holds on
//! every node.

use reqwest::header::{HeaderMap, AUTHORIZATION};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::Digest as _;

use crate::common::*;

const PASSWORD: &str = "pw";
/// Administers everything; sets the scene.
const ROOT: &str = "root";

/// Makes one access change through the admin API; returns the status.
async fn change(node: &TestNode, change: Value) -> StatusCode {
    send(node.post("/_berth/access").json(&change))
        .await
        .status()
}

async fn scene(node: &TestNode, changes: Vec<Value>) {
    for c in changes {
        let status = change(node, c.clone()).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{c}");
    }
}

fn team_grant(org: &str, team: &str, target: Value, level: &str) -> Value {
    json!({ "grant": { "resource": target, "grantee": { "team": { "org": org, "team": team } }, "level": level } })
}

/// acme has readers (rita), writers (will) and admins (ada); otto owns
/// another organization. acme/public is public, acme/private is not.
async fn acme(node: &TestNode) {
    let mut changes = vec![
        json!({ "put_org": { "name": "acme", "owner": null } }),
        json!({ "put_org": { "name": "other", "owner": "otto" } }),
        json!({ "set_public": { "repository": "acme/public", "public": true } }),
    ];
    for (team, user, level) in [
        ("readers", "rita", "read"),
        ("writers", "will", "write"),
        ("admins", "ada", "admin"),
    ] {
        changes.push(json!({ "put_team": { "org": "acme", "team": team } }));
        changes.push(json!({ "add_member": { "org": "acme", "team": team, "user": user } }));
        changes.push(team_grant(
            "acme",
            team,
            json!({ "namespace": "acme" }),
            level,
        ));
    }
    scene(node, changes).await;
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    Basic,
    Token,
}

#[derive(Clone, Copy, Debug)]
enum Action {
    Pull,
    Push,
    Delete,
    Catalog,
    Tags,
    Mount,
}

/// What a combination must give: a status and, for refusals, an OCI code.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Outcome {
    Ok(u16),
    Refused(u16, &'static str),
}

const UNAUTHORIZED: Outcome = Outcome::Refused(401, "UNAUTHORIZED");
const DENIED: Outcome = Outcome::Refused(403, "DENIED");

/// What each caller may do, by the rules of berth's access model.
fn expected(caller: Option<&str>, action: Action, public: bool) -> Outcome {
    let level = match caller {
        None => 0,
        Some("rita") => 1,
        Some("will") => 2,
        Some("ada") => 3,
        Some(_) => 0, // otto, of another organization
    };
    let reads = public || level >= 1;
    let refused = if caller.is_none() {
        UNAUTHORIZED
    } else {
        DENIED
    };
    match action {
        Action::Pull | Action::Tags if reads => Outcome::Ok(200),
        Action::Pull | Action::Tags => refused,
        Action::Push if level >= 2 => Outcome::Ok(202),
        Action::Push => refused,
        Action::Delete if level >= 3 => Outcome::Ok(202),
        Action::Delete => refused,
        Action::Catalog => Outcome::Ok(200),
        // Into the caller's own namespace: anonymous has none.
        Action::Mount if caller.is_none() => UNAUTHORIZED,
        // A source the caller cannot read turns into a plain upload.
        Action::Mount if reads => Outcome::Ok(201),
        Action::Mount => Outcome::Ok(202),
    }
}

/// The request an action makes, and the token scopes it needs.
fn request(
    caller: Option<&str>,
    action: Action,
    repo: &str,
    image: &PushedImage,
    victim: &str,
) -> (Method, String, Vec<String>) {
    let layer = &image.layers[0].0.digest;
    let all = format!("repository:{repo}:pull,push,delete");
    match action {
        Action::Pull => (Method::GET, format!("/v2/{repo}/manifests/v1"), vec![all]),
        Action::Push => (
            Method::POST,
            format!("/v2/{repo}/blobs/uploads/"),
            vec![all],
        ),
        Action::Delete => (
            Method::DELETE,
            format!("/v2/{repo}/blobs/{victim}"),
            vec![all],
        ),
        Action::Catalog => (
            Method::GET,
            "/v2/_catalog".into(),
            vec!["registry:catalog:*".into()],
        ),
        Action::Tags => (Method::GET, format!("/v2/{repo}/tags/list"), vec![all]),
        Action::Mount => {
            let target = format!("{}/mounted", caller.unwrap_or("anonymous"));
            (
                Method::POST,
                format!("/v2/{target}/blobs/uploads/?mount={layer}&from={repo}"),
                vec![format!("repository:{target}:pull,push"), all],
            )
        }
    }
}

/// Sends a request as `caller`, by password or by a token the node's
/// endpoint issued for `scopes`.
async fn send_as(
    node: &TestNode,
    caller: Option<&str>,
    mode: Mode,
    method: Method,
    path: &str,
    scopes: &[String],
) -> reqwest::Response {
    let http = reqwest::Client::new();
    let mut req = http.request(method, node.url(path));
    match (mode, caller) {
        (Mode::Basic, Some(user)) => req = req.basic_auth(user, Some(PASSWORD)),
        (Mode::Basic, None) => {}
        (Mode::Token, caller) => {
            let query: String = scopes.iter().map(|s| format!("&scope={s}")).collect();
            let mut ask = http.get(node.url(&format!("/auth/token?service=berth{query}")));
            if let Some(user) = caller {
                ask = ask.basic_auth(user, Some(PASSWORD));
            }
            let resp = ask.send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "token for {caller:?}");
            let body: Value = resp.json().await.unwrap();
            req = req.bearer_auth(body["token"].as_str().unwrap());
        }
    }
    req.send().await.unwrap()
}

async fn matrix(mode: Mode) {
    let (node, _files) = node_with_users(&["rita", "will", "ada", "otto"], ROOT, PASSWORD).await;
    acme(&node).await;
    let mut images = Vec::new();
    for repo in ["acme/public", "acme/private"] {
        images.push((repo, node.push_image(repo, "v1").await));
    }
    let callers = [None, Some("rita"), Some("will"), Some("ada"), Some("otto")];
    let actions = [
        Action::Pull,
        Action::Push,
        Action::Delete,
        Action::Catalog,
        Action::Tags,
        Action::Mount,
    ];
    let mut failures = Vec::new();
    let mut checked = 0;
    for (repo, image) in &images {
        let public = repo.ends_with("public");
        for caller in callers {
            for action in actions {
                // A blob to delete, present again for every attempt.
                let victim = node.push_blob(repo, b"delete me").await;
                let (method, path, scopes) = request(caller, action, repo, image, &victim);
                let resp = send_as(&node, caller, mode, method, &path, &scopes).await;
                let want = expected(caller, action, public);
                let got = resp.status().as_u16();
                let headers = resp.headers().clone();
                let body = resp.bytes().await.unwrap();
                let at = format!("{mode:?} {caller:?} {action:?} {repo}");
                checked += 1;
                match want {
                    Outcome::Ok(status) if status == got => {}
                    Outcome::Ok(status) => failures.push(format!(
                        "{at}: {got} instead of {status}: {}",
                        String::from_utf8_lossy(&body)
                    )),
                    Outcome::Refused(status, code) => {
                        if let Err(e) = check_oci_error(got, &headers, &body, status, code) {
                            failures.push(format!("{at}: {e}"));
                        }
                    }
                }
                if let (Action::Catalog, Outcome::Ok(_)) = (action, want) {
                    let listed: Value = serde_json::from_slice(&body).unwrap();
                    let shown = listed["repositories"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|r| r == repo);
                    if shown != (expected(caller, Action::Pull, public) == Outcome::Ok(200)) {
                        failures.push(format!("{at}: listed {shown}: {listed}"));
                    }
                }
                if let (Action::Mount, Outcome::Ok(202)) = (action, want) {
                    // Nothing of the unreadable source reached the target.
                    let layer = &image.layers[0].0.digest;
                    let target = format!("{}/mounted", caller.unwrap());
                    let head = send(node.head(&format!("/v2/{target}/blobs/{layer}"))).await;
                    if head.status() != StatusCode::NOT_FOUND {
                        failures.push(format!("{at}: the blob was mounted anyway"));
                    }
                }
            }
        }
    }
    assert_eq!(checked, 60);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn every_caller_action_and_repository_kind_with_passwords() {
    matrix(Mode::Basic).await;
}

#[tokio::test]
async fn every_caller_action_and_repository_kind_with_tokens() {
    matrix(Mode::Token).await;
}

#[tokio::test]
async fn only_administrators_and_owners_change_access() {
    let (node, _files) = node_with_users(&["olga", "dave"], ROOT, PASSWORD).await;
    scene(
        &node,
        vec![json!({ "put_org": { "name": "acme", "owner": "olga" } })],
    )
    .await;
    let as_user = |user: &str, body: Value| {
        let http = signed_in(user, PASSWORD);
        let url = node.url("/_berth/access");
        async move { http.post(url).json(&body).send().await.unwrap() }
    };
    // An owner manages its organization's teams; a stranger may not, nor
    // may an owner create users.
    let team = json!({ "put_team": { "org": "acme", "team": "dev" } });
    assert_eq!(as_user("olga", team.clone()).await.status(), 204);
    let resp = as_user("dave", team).await;
    assert_oci_error(resp, 403, "DENIED").await;
    let user = json!({ "put_user": { "name": "eve", "password_hash": null, "admin": true } });
    assert_oci_error(as_user("olga", user).await, 403, "DENIED").await;
    // Anonymous callers are asked to sign in.
    let resp = reqwest::Client::new()
        .post(node.url("/_berth/access"))
        .json(&json!({ "delete_org": { "name": "acme" } }))
        .send()
        .await
        .unwrap();
    assert_oci_error(resp, 401, "UNAUTHORIZED").await;
    // Bad changes get the right codes.
    let resp = send(node.post("/_berth/access").body("{not json")).await;
    assert_oci_error(resp, 400, "NAME_INVALID").await;
    let ghost = json!({ "put_team": { "org": "ghost", "team": "dev" } });
    let resp = send(node.post("/_berth/access").json(&ghost)).await;
    assert_oci_error(resp, 404, "NAME_UNKNOWN").await;
    let huge = vec![b' '; 100 << 10];
    let resp = send(node.post("/_berth/access").body(huge)).await;
    assert_oci_error(resp, 413, "SIZE_INVALID").await;
    // Administrators see everything, owners what they administer, others
    // nothing but themselves; nobody sees a secret.
    let other = json!({ "put_org": { "name": "other", "owner": "dave" } });
    assert_eq!(change(&node, other).await, StatusCode::NO_CONTENT);
    let shown = json_body(send(node.get("/_berth/access")).await).await;
    assert_eq!(
        shown["organizations"]["acme"]["teams"]["owners"],
        json!(["olga"])
    );
    assert!(shown["organizations"]["acme"]["teams"]["dev"].is_array());
    assert!(shown["organizations"]["other"].is_object());
    let as_olga = signed_in("olga", PASSWORD)
        .get(node.url("/_berth/access"))
        .send()
        .await
        .unwrap();
    let seen = json_body(as_olga).await;
    assert!(seen["organizations"]["acme"].is_object(), "{seen}");
    assert!(seen["organizations"]["other"].is_null(), "{seen}");
    let anonymous = reqwest::Client::new()
        .get(node.url("/_berth/access"))
        .send();
    assert_oci_error(anonymous.await.unwrap(), 401, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn users_kept_in_the_cluster_sign_in_with_their_password() {
    let (node, _files) = node_with_users(&[], ROOT, PASSWORD).await;
    let hash = bcrypt::hash("carols password", 4).unwrap();
    scene(
        &node,
        vec![json!({ "put_user": { "name": "carol", "password_hash": hash, "admin": false } })],
    )
    .await;
    let carol = signed_in("carol", "carols password");
    let resp = carol.get(node.url("/v2/")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // Her own namespace is hers; others' are not.
    let resp = carol
        .post(node.url("/v2/carol/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let resp = carol
        .post(node.url("/v2/root/app/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_oci_error(resp, 403, "DENIED").await;
    let wrong = signed_in("carol", "guess")
        .get(node.url("/v2/"))
        .send()
        .await;
    assert_oci_error(wrong.unwrap(), 401, "UNAUTHORIZED").await;
    let bad = json!({ "put_user": { "name": "dan", "password_hash": "plain", "admin": false } });
    let resp = send(node.post("/_berth/access").json(&bad)).await;
    assert_oci_error(resp, 400, "NAME_INVALID").await;
}

/// Makes robot acme+ci, with write access to acme/app; returns its secret.
/// A secret hash the caller sends is ignored: the node draws the secret.
async fn robot(node: &TestNode) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let weak: [u8; 32] = sha2::Sha256::digest(b"guessable").into();
    let change = json!({ "put_robot": { "name": "acme+ci", "robot": {
        "secret_sha256": weak, "repositories": ["acme/app"], "level": "write",
        "expires": now + 3600,
    } } });
    let resp = send(node.post("/_berth/access").json(&change)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let secret = json_body(resp).await["secret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 64);
    secret
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_robot_stops_working_on_every_node() {
    let files = tempfile::tempdir().unwrap();
    std::fs::write(
        files.path().join("htpasswd"),
        format!("{ROOT}:{}\n", bcrypt::hash(PASSWORD, 4).unwrap()),
    )
    .unwrap();
    let path = files.path().join("htpasswd");
    let mut cluster = crate::cluster::TestCluster::with_config(3, move |c| {
        c.htpasswd = Some(path.clone());
        c.admins.insert(ROOT.into());
    })
    .await;
    for node in &mut cluster.nodes {
        node.http = signed_in(ROOT, PASSWORD);
    }
    scene(
        &cluster.nodes[0],
        vec![json!({ "put_org": { "name": "acme", "owner": null } })],
    )
    .await;
    let secret = robot(&cluster.nodes[0]).await;
    let guess = signed_in("acme+ci", "guessable").get(cluster.nodes[1].url("/v2/"));
    assert_oci_error(guess.send().await.unwrap(), 401, "UNAUTHORIZED").await;
    // The robot pushes with its secret on one node and with a token from
    // another on a third; it may not leave its repository.
    let bot = signed_in("acme+ci", &secret);
    let push = |i: usize, repo: &str| {
        let url = cluster.nodes[i].url(&format!("/v2/{repo}/blobs/uploads/"));
        bot.post(url).send()
    };
    assert_eq!(push(1, "acme/app").await.unwrap().status(), 202);
    assert_oci_error(push(1, "acme/other").await.unwrap(), 403, "DENIED").await;
    let resp = bot
        .get(cluster.nodes[2].url("/auth/token?service=berth&scope=repository:acme/app:pull,push"))
        .send()
        .await
        .unwrap();
    let token = json_body(resp).await["token"].as_str().unwrap().to_owned();
    let with_token = |i: usize| {
        reqwest::Client::new()
            .post(cluster.nodes[i].url("/v2/acme/app/blobs/uploads/"))
            .bearer_auth(&token)
            .send()
    };
    for i in 0..3 {
        assert_eq!(with_token(i).await.unwrap().status(), 202, "node {i}");
    }
    // Deleted on node 0: neither its secret nor its unexpired token works
    // anywhere once the change is applied there.
    let delete = json!({ "delete_robot": { "name": "acme+ci" } });
    assert_eq!(
        change(&cluster.nodes[0], delete).await,
        StatusCode::NO_CONTENT
    );
    for i in 0..3 {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let resp = with_token(i).await.unwrap();
            if resp.status() != StatusCode::ACCEPTED {
                assert_oci_error(resp, 401, "UNAUTHORIZED").await;
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "node {i} still takes the token"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_oci_error(push(i, "acme/app").await.unwrap(), 401, "UNAUTHORIZED").await;
    }
}

#[tokio::test]
async fn request_bodies_have_caps() {
    let (node, _files) = node_with_users(&[], ROOT, PASSWORD).await;
    let form = format!(
        "grant_type=password&username=root&password={}",
        "x".repeat(100 << 10)
    );
    let resp = send(node.post("/auth/token").body(form)).await;
    assert_oci_error(resp, 413, "SIZE_INVALID").await;
}

#[tokio::test]
async fn a_revoked_grant_ends_the_tokens_that_carry_it() {
    let (node, _files) = node_with_users(&["rita"], ROOT, PASSWORD).await;
    node.push_image("root/app", "v1").await;
    let grant = |verb: &str| json!({ verb: { "resource": { "repository": "root/app" }, "grantee": { "user": "rita" } } });
    let mut give = grant("grant");
    give["grant"]["level"] = json!("read");
    scene(&node, vec![give]).await;
    let tags = "/v2/root/app/tags/list";
    let query = "/auth/token?service=berth&scope=repository:root/app:pull";
    let issued = json_body(send(signed_in("rita", PASSWORD).get(node.url(query))).await).await;
    let token = issued["token"].as_str().unwrap().to_owned();
    let with_token = || {
        reqwest::Client::new()
            .get(node.url(tags))
            .bearer_auth(&token)
            .send()
    };
    assert_eq!(with_token().await.unwrap().status(), StatusCode::OK);
    scene(&node, vec![grant("revoke")]).await;
    assert_oci_error(with_token().await.unwrap(), 403, "DENIED").await;
}

#[tokio::test]
async fn an_upload_past_the_blob_size_cap_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = berth::config::ServeConfig::for_test(dir.path());
    config.max_blob_size = 1000;
    let node = TestNode::start_with(dir, config).await;
    let location = node.start_upload("a/app").await;
    let resp = send(node.patch(&location).body(vec![7u8; 600])).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let resp = send(node.patch(&location).body(vec![7u8; 600])).await;
    assert_oci_error(resp, 413, "SIZE_INVALID").await;
    // The session keeps what came before the chunk that crossed the cap.
    let resp = send(node.get(&location)).await;
    assert_eq!(header(&resp, "range"), "0-599");
}

#[tokio::test]
async fn a_deleted_user_loses_its_tokens_and_refresh_tokens_at_once() {
    let (node, _files) = node_with_users(&[], ROOT, PASSWORD).await;
    let hash = bcrypt::hash("carols password", 4).unwrap();
    let put = json!({ "put_user": { "name": "carol", "password_hash": hash, "admin": false } });
    scene(&node, vec![put]).await;
    let carol = signed_in("carol", "carols password");
    let query = "/auth/token?service=berth&offline_token=true&scope=repository:carol/app:pull,push";
    let issued = json_body(carol.get(node.url(query)).send().await.unwrap()).await;
    let (token, refresh) = (
        issued["token"].as_str().unwrap().to_owned(),
        issued["refresh_token"].as_str().unwrap().to_owned(),
    );
    let push = || {
        reqwest::Client::new()
            .post(node.url("/v2/carol/app/blobs/uploads/"))
            .bearer_auth(&token)
            .send()
    };
    let renew = || {
        reqwest::Client::new()
            .post(node.url("/auth/token"))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)])
            .send()
    };
    assert_eq!(push().await.unwrap().status(), StatusCode::ACCEPTED);
    assert_eq!(renew().await.unwrap().status(), StatusCode::OK);
    scene(&node, vec![json!({ "delete_user": { "name": "carol" } })]).await;
    assert_oci_error(push().await.unwrap(), 401, "UNAUTHORIZED").await;
    assert_oci_error(renew().await.unwrap(), 401, "UNAUTHORIZED").await;
}

/// A token for `access` (scopes), signed with an external issuer's key.
fn external_token(key: &rcgen::KeyPair, access: &[&str]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let access: Vec<Value> = access
        .iter()
        .map(|scope| {
            let mut parts = scope.splitn(3, ':');
            let (kind, name, actions) = (parts.next(), parts.next(), parts.next());
            json!({ "type": kind, "name": name, "actions": actions.unwrap().split(',').collect::<Vec<_>>() })
        })
        .collect();
    let claims = json!({
        "iss": "https://auth.example.com", "sub": "ext-user", "aud": "berth",
        "exp": now + 300, "nbf": now - 1, "iat": now, "jti": "t", "access": access,
    });
    let signing = jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    jsonwebtoken::encode(&header, &claims, &signing).unwrap()
}

#[tokio::test]
async fn an_external_issuer_decides_what_its_callers_read() {
    let files = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    std::fs::write(files.path().join("issuer.pem"), key.public_key_pem()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = berth::config::ServeConfig::for_test(dir.path());
    config.token.issuer_key = Some(files.path().join("issuer.pem"));
    config.token.realm = Some("https://auth.example.com/token".into());
    let mut node = TestNode::start_with(dir, config).await;
    let all = external_token(
        &key,
        &["repository:a/app:pull,push", "repository:b/app:pull,push"],
    );
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, format!("Bearer {all}").parse().unwrap());
    node.http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    let image = node.push_image("a/app", "v1").await;
    let layer = &image.layers[0].0.digest;
    let as_token = |token: String, method: Method, path: String| {
        reqwest::Client::new()
            .request(method, node.url(&path))
            .bearer_auth(token)
            .send()
    };
    // The catalog: the issuer granted it, so berth lists everything.
    let catalog = external_token(&key, &["registry:catalog:*"]);
    let resp = as_token(catalog, Method::GET, "/v2/_catalog".into()).await;
    let listed = json_body(resp.unwrap()).await;
    assert_eq!(listed["repositories"], json!(["a/app"]));
    let resp = as_token(all.clone(), Method::GET, "/v2/_catalog".into()).await;
    assert_oci_error(resp.unwrap(), 401, "UNAUTHORIZED").await;
    // A mount reads its source as far as the token grants it.
    let mount = format!("/v2/b/app/blobs/uploads/?mount={layer}&from=a/app");
    let resp = as_token(all, Method::POST, mount.clone()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let push_only = external_token(&key, &["repository:c/app:pull,push"]);
    let into_c = mount.replace("/v2/b/app/", "/v2/c/app/");
    let resp = as_token(push_only, Method::POST, into_c).await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn owners_manage_webhooks_of_their_namespace_only() {
    let (node, _files) = node_with_users(&["olga", "dave"], ROOT, PASSWORD).await;
    scene(
        &node,
        vec![json!({ "put_org": { "name": "acme", "owner": "olga" } })],
    )
    .await;
    let as_user = |user: &str, method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut req = signed_in(user, PASSWORD).request(method, node.url(path));
        if let Some(body) = body {
            req = req.json(&body);
        }
        async move { req.send().await.unwrap() }
    };
    let hook = |id: &str, extra: Value| {
        let mut spec = json!({ "id": id, "url": "https://ci.example.com/hook" });
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        spec
    };
    let post = reqwest::Method::POST;
    let ok = hook("acme-ci", json!({ "repositories": ["acme/*"] }));
    let resp = as_user("olga", post.clone(), "/_berth/webhooks", Some(ok)).await;
    assert_eq!(resp.status(), 201);
    for refused in [
        hook("everything", json!({})),
        hook("theirs", json!({ "repositories": ["other/*"] })),
        hook("mixed", json!({ "repositories": ["acme/*", "other/app"] })),
        hook(
            "inside",
            json!({ "repositories": ["acme/*"], "url": "http://127.0.0.1:9/", "allow_internal": true }),
        ),
    ] {
        let resp = as_user(
            "olga",
            post.clone(),
            "/_berth/webhooks",
            Some(refused.clone()),
        )
        .await;
        assert_oci_error(resp, 403, "DENIED").await;
    }
    let acme = hook("acme-ci", json!({ "repositories": ["acme/*"] }));
    let resp = as_user("dave", post.clone(), "/_berth/webhooks", Some(acme)).await;
    assert_oci_error(resp, 403, "DENIED").await;
    // Lists show what the caller could manage.
    let get = reqwest::Method::GET;
    let seen = json_body(as_user("dave", get.clone(), "/_berth/webhooks", None).await).await;
    assert_eq!(seen, json!([]));
    let seen = json_body(as_user("olga", get, "/_berth/webhooks", None).await).await;
    assert_eq!(seen.as_array().unwrap().len(), 1);
    let all = json_body(send(node.get("/_berth/webhooks")).await).await;
    assert_eq!(all.as_array().unwrap().len(), 1);
    let delete = reqwest::Method::DELETE;
    let resp = as_user("dave", delete.clone(), "/_berth/webhooks/acme-ci", None).await;
    assert_oci_error(resp, 403, "DENIED").await;
    let resp = as_user("olga", delete, "/_berth/webhooks/acme-ci", None).await;
    assert_eq!(resp.status(), 204);
}

#[tokio::test]
async fn metrics_are_for_administrators_unless_public() {
    let (node, _files) = node_with_users(&["dave"], ROOT, PASSWORD).await;
    let anonymous = reqwest::Client::new().get(node.url("/metrics")).send();
    assert_oci_error(anonymous.await.unwrap(), 401, "UNAUTHORIZED").await;
    let dave = signed_in("dave", PASSWORD).get(node.url("/metrics")).send();
    assert_oci_error(dave.await.unwrap(), 403, "DENIED").await;
    // A wrong password is counted as a refused login.
    let wrong = signed_in("dave", "not-the-password").get(node.url("/v2/"));
    assert_eq!(wrong.send().await.unwrap().status(), 401);
    let root = send(node.get("/metrics")).await;
    assert_eq!(root.status(), 200);
    let text = root.text().await.unwrap();
    assert!(text.contains("berth_raft_term"));
    let refused = r#"berth_auth_logins_refused_total{reason="password"} 1"#;
    assert!(text.lines().any(|l| l == refused), "{text}");
    // With --metrics-public anyone may scrape.
    let dir = tempfile::tempdir().unwrap();
    let mut config = berth::config::ServeConfig::for_test(dir.path());
    config.htpasswd = Some(_files.path().join("htpasswd"));
    config.metrics_public = true;
    let open = TestNode::start_with(dir, config).await;
    let anonymous = reqwest::Client::new().get(open.url("/metrics")).send();
    assert_eq!(anonymous.await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_metrics_listener_serves_metrics_alone_to_anyone() {
    let files = tempfile::tempdir().unwrap();
    std::fs::write(
        files.path().join("htpasswd"),
        format!("{ROOT}:{}\n", bcrypt::hash(PASSWORD, 4).unwrap()),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = berth::config::ServeConfig::for_test(dir.path());
    config.htpasswd = Some(files.path().join("htpasswd"));
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let node = TestNode::start_with(dir, config).await;
    let at = node.server().metrics_addr.expect("a metrics listener");
    let http = reqwest::Client::new();
    let metrics = http
        .get(format!("http://{at}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics.text().await.unwrap().contains("berth_raft_term"));
    let other = http.get(format!("http://{at}/v2/")).send().await.unwrap();
    assert_eq!(other.status(), 404);
    // The client port still asks for credentials.
    let anonymous = http.get(node.url("/metrics")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn a_signed_in_level_lets_every_user_push_anywhere_as_distribution_does() {
    let (mut node, _files) = node_with_users(&["dora"], ROOT, PASSWORD).await;
    let dora = signed_in("dora", PASSWORD);
    let start = |http: &reqwest::Client, node: &TestNode| {
        http.post(node.url("/v2/bars/auth/blobs/uploads/"))
    };
    // berth's own rules: dora's namespace is `dora`, and the refusal says
    // which setting would change that.
    let refused = send(start(&dora, &node)).await;
    let body = assert_oci_error(refused, 403, "DENIED").await;
    let message = body["errors"][0]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("--signed-in-level write"), "{message}");
    assert_eq!(
        send(dora.post(node.url("/v2/dora/app/blobs/uploads/")))
            .await
            .status(),
        202
    );

    node.config_mut().signed_in = berth::auth::policy::SignedIn::from_settings(
        Some("write".parse().unwrap()),
        vec!["*".into(), "!private/*".into()],
    )
    .unwrap();
    node.restart().await;
    assert_eq!(send(start(&dora, &node)).await.status(), 202);
    let pull = send(dora.get(node.url("/v2/private/x/tags/list"))).await;
    assert_eq!(pull.status(), 403, "outside the pattern");
    // Anonymous callers gain nothing.
    let anonymous = send(start(&reqwest::Client::new(), &node)).await;
    assert_eq!(anonymous.status(), 401);
}
