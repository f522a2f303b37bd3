//! The web UI over HTTP: sign-in and its cookies, who sees which
//! repository, CSRF refusals, tag deletion by admins only, names and
//! annotations rendered as text, multi-arch images with their layers, tag
//! pages, and the cluster page telling a stopped node from a live one.
//! (The browser flows are in tests/e2e/ui.sh, with real Chromium.)

use std::time::{Duration, Instant};

use reqwest::{redirect::Policy, StatusCode};
use serde_json::json;

use crate::cluster::TestCluster;
use crate::common::*;

const PASSWORD: &str = "pw";

/// A browser without JavaScript: it keeps the UI's cookies and reads the
/// CSRF token off the last page.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: std::collections::BTreeMap<String, String>,
    csrf: String,
}

struct Page {
    status: StatusCode,
    location: String,
    body: String,
}

impl Browser {
    fn new(node: &TestNode) -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(Policy::none())
                .build()
                .unwrap(),
            base: node.url(""),
            cookies: Default::default(),
            csrf: String::new(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    /// Posts a form; its `csrf` field is the last page's unless `fields`
    /// give one.
    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let mut form: Vec<(&str, &str)> = fields.to_vec();
        let csrf = self.csrf.clone();
        if !fields.iter().any(|(k, _)| *k == "csrf") {
            form.push(("csrf", &csrf));
        }
        let req = self.http.post(format!("{}{path}", self.base)).form(&form);
        self.send(req).await
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let cookie: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let resp = send(req.header("cookie", cookie.join("; "))).await;
        for set in resp.headers().get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let (pair, _) = set.split_once(';').unwrap_or((set, ""));
            let (k, v) = pair.split_once('=').unwrap();
            if set.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.into(), v.into());
            }
        }
        let status = resp.status();
        let location = resp
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = resp.text().await.unwrap();
        if let Some(token) = body
            .split(r#"name="csrf" value=""#)
            .nth(1)
            .and_then(|rest| rest.split('"').next())
        {
            self.csrf = token.to_owned();
        }
        Page {
            status,
            location,
            body,
        }
    }

    async fn sign_in(&mut self, user: &str, password: &str) -> Page {
        self.get("/ui/signin").await;
        self.post("/ui/signin", &[("username", user), ("password", password)])
            .await
    }
}

/// A node with sign-in: `root` administers, `rita` reads `acme/app`;
/// `acme/app:v1` and `v2` and `secret/hidden:v1` are private, `pub/hello`
/// public.
async fn scene() -> (TestNode, tempfile::TempDir) {
    let (node, files) = node_with_users(&["rita"], "root", PASSWORD).await;
    for (repo, tag) in [
        ("acme/app", "v1"),
        ("acme/app", "v2"),
        ("secret/hidden", "v1"),
        ("pub/hello", "v1"),
    ] {
        node.push_image(repo, tag).await;
    }
    for change in [
        json!({ "set_public": { "repository": "pub/hello", "public": true } }),
        json!({ "grant": { "resource": { "repository": "acme/app" }, "grantee": { "user": "rita" }, "level": "read" } }),
    ] {
        let resp = send(node.post("/_berth/access").json(&change)).await;
        assert_eq!(resp.status(), StatusCode::NO_CONTENT, "{change}");
    }
    (node, files)
}

async fn tag_exists(node: &TestNode, repo: &str, tag: &str) -> bool {
    let resp = send(
        node.head(&format!("/v2/{repo}/manifests/{tag}"))
            .header("accept", OCI_MANIFEST),
    )
    .await;
    resp.status() == StatusCode::OK
}

#[tokio::test]
async fn ui_sign_in_shows_each_visitor_only_what_they_may_read() {
    let (node, _files) = scene().await;
    let mut anonymous = Browser::new(&node);
    let page = anonymous.get("/ui/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("pub/hello"), "{}", page.body);
    for private in ["acme/app", "secret/hidden"] {
        assert!(
            !page.body.contains(private),
            "{private} shown to an anonymous visitor"
        );
    }
    let search = anonymous.get("/ui/?q=secret").await;
    assert!(!search.body.contains("secret/hidden"));
    let hidden = anonymous.get("/ui/r/secret/hidden").await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    assert!(!hidden.body.contains("secret/hidden"));
    let image = anonymous.get("/ui/r/secret/hidden/-/v1").await;
    assert_eq!(image.status, StatusCode::NOT_FOUND);

    // A wrong password is refused on the page; the right one gives a
    // session cookie the browser keeps to itself.
    let mut rita = Browser::new(&node);
    let wrong = rita.sign_in("rita", "guess").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains(r#"id="error""#));
    rita.get("/ui/signin").await;
    let resp = send(
        rita.http
            .post(format!("{}/ui/signin", rita.base))
            .header(
                "cookie",
                format!("berth_csrf={}", rita.cookies["berth_csrf"]),
            )
            .form(&[
                ("username", "rita"),
                ("password", PASSWORD),
                ("csrf", &rita.csrf),
            ]),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let set = header(&resp, "set-cookie");
    assert!(set.starts_with("berth_session="), "{set}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(set.contains(attribute), "{set} lacks {attribute}");
    }
    assert!(!set.contains("Secure"), "Secure on plain HTTP: {set}");
    assert!(rita.sign_in("rita", PASSWORD).await.status == StatusCode::SEE_OTHER);
    let listed = rita.get("/ui/").await;
    assert!(
        listed.body.contains(r#"id="whoami">rita<"#),
        "{}",
        listed.body
    );
    assert!(listed.body.contains("acme/app") && listed.body.contains("pub/hello"));
    assert!(!listed.body.contains("secret/hidden"));

    // A session is not a bearer token, and a forged session is no one.
    let session = rita.cookies["berth_session"].clone();
    let bearer = send(
        reqwest::Client::new()
            .get(node.url("/v2/acme/app/tags/list"))
            .bearer_auth(&session),
    )
    .await;
    assert_eq!(bearer.status(), StatusCode::UNAUTHORIZED);
    let mut forger = Browser::new(&node);
    forger
        .cookies
        .insert("berth_session".into(), format!("{session}x"));
    let forged = forger.get("/ui/").await;
    assert!(!forged.body.contains("acme/app"));

    // Pages keep to their own origin.
    let resp = send(reqwest::Client::new().get(node.url("/ui/"))).await;
    let csp = header(&resp, "content-security-policy");
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(header(&resp, "x-frame-options"), "DENY");

    // Signing out ends the session in this browser.
    let out = rita.post("/ui/signout", &[]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(!rita.get("/ui/").await.body.contains("acme/app"));
}

#[tokio::test]
async fn ui_deletes_tags_for_admins_only_and_never_without_the_csrf_token() {
    let (node, _files) = scene().await;
    let mut rita = Browser::new(&node);
    rita.sign_in("rita", PASSWORD).await;
    let page = rita.get("/ui/r/acme/app").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(r#"data-tag="v1""#));
    assert!(
        !page.body.contains("delete-tag"),
        "a reader is offered a delete"
    );
    let refused = rita.post("/ui/r/acme/app/-/v1/delete", &[]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.body.contains(r#"id="error""#));
    assert!(tag_exists(&node, "acme/app", "v1").await);

    let mut root = Browser::new(&node);
    root.sign_in("root", PASSWORD).await;
    let page = root.get("/ui/r/acme/app").await;
    assert!(page.body.contains("delete-tag"));
    // Without the token, with another browser's, with a wrong one: refused.
    let good = root.csrf.clone();
    let rita_token = rita.csrf.clone();
    for token in ["", "0123456789abcdef0123456789abcdef", rita_token.as_str()] {
        let forged = root
            .post("/ui/r/acme/app/-/v1/delete", &[("csrf", token)])
            .await;
        assert_eq!(forged.status, StatusCode::FORBIDDEN, "token {token:?}");
        assert!(forged.body.contains("stale or did not come from"));
    }
    let resp = send(
        reqwest::Client::new()
            .post(node.url("/ui/r/acme/app/-/v1/delete"))
            .header(
                "cookie",
                format!("berth_session={}", root.cookies["berth_session"]),
            )
            .form(&[("csrf", good.as_str())]),
    )
    .await;
    assert_eq!(
        resp.status(),
        StatusCode::FORBIDDEN,
        "a token without its browser cookie"
    );
    assert!(tag_exists(&node, "acme/app", "v1").await);

    let deleted = root
        .post("/ui/r/acme/app/-/v1/delete", &[("csrf", good.as_str())])
        .await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER);
    assert_eq!(deleted.location, "/ui/r/acme/app?done=tag-deleted");
    assert!(!tag_exists(&node, "acme/app", "v1").await);
    assert!(tag_exists(&node, "acme/app", "v2").await);
    let after = root.get(&deleted.location).await;
    assert!(after.body.contains(r#"id="notice""#));
    assert!(!after.body.contains(r#"data-tag="v1""#));

    // Visibility: an admin makes the repository public, and anyone sees it.
    let public = root
        .post("/ui/r/acme/app/-/visibility", &[("public", "true")])
        .await;
    assert_eq!(public.status, StatusCode::SEE_OTHER);
    assert!(Browser::new(&node)
        .get("/ui/")
        .await
        .body
        .contains("acme/app"));
}

#[tokio::test]
async fn ui_renders_names_annotations_and_labels_as_text() {
    let node = TestNode::start().await;
    let attack = "<script>alert(1)</script>";
    let config_bytes = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": { "Labels": { "note": "<img src=x onerror=alert(2)>" }, "Entrypoint": ["/bin/sh", "-c", "echo '<b>'"] },
    }))
    .unwrap();
    let config = Blob::new(
        OCI_CONFIG,
        node.push_blob("x/app", &config_bytes).await,
        config_bytes.len(),
    );
    let manifest = image_manifest(
        &config,
        &[],
        json!({ "annotations": { "org.opencontainers.image.description": attack } }),
    );
    node.push_manifest("x/app", "v1", OCI_MANIFEST, &manifest)
        .await;
    let body = send(node.get("/ui/r/x/app/-/v1"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{body}"
    );
    assert!(
        body.contains("&lt;img src=x onerror=alert(2)&gt;"),
        "{body}"
    );
    for raw in [attack, "<img src=x", "<b>"] {
        assert!(!body.contains(raw), "{raw} rendered as markup");
    }
    let bad = send(node.get("/ui/r/%3Cscript%3Ealert(1)%3C/script%3E")).await;
    assert_eq!(bad.status(), StatusCode::NOT_FOUND);
    assert!(!bad.text().await.unwrap().contains("<script>alert"));
    let search = send(node.get("/ui/?q=%3Cscript%3E"))
        .await
        .text()
        .await
        .unwrap();
    assert!(search.contains("&lt;script&gt;") && !search.contains("<script>alert"));
}

#[tokio::test]
async fn ui_shows_multi_arch_images_their_layers_and_pages_of_tags() {
    let node = TestNode::start().await;
    let mut children = Vec::new();
    for arch in ["amd64", "arm64"] {
        let config_bytes = serde_json::to_vec(&json!({
            "architecture": arch, "os": "linux",
            "config": { "Env": ["PATH=/bin"], "Entrypoint": ["/app"] },
            "history": [{ "created_by": format!("COPY app-{arch} /app") }],
        }))
        .unwrap();
        let config = Blob::new(
            OCI_CONFIG,
            node.push_blob("multi/app", &config_bytes).await,
            config_bytes.len(),
        );
        let layer_bytes = random_blob(3000);
        let layer = Blob::new(
            OCI_LAYER,
            node.push_blob("multi/app", &layer_bytes).await,
            3000,
        );
        let manifest = image_manifest(&config, &[layer], json!({}));
        let digest = sha256(&manifest);
        node.push_manifest("multi/app", &digest, OCI_MANIFEST, &manifest)
            .await;
        children.push(json!({
            "mediaType": OCI_MANIFEST, "digest": digest, "size": manifest.len(),
            "platform": { "os": "linux", "architecture": arch },
        }));
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children,
    }))
    .unwrap();
    node.push_manifest("multi/app", "v1", OCI_INDEX, &index)
        .await;

    let repo = send(node.get("/ui/r/multi/app"))
        .await
        .text()
        .await
        .unwrap();
    let row = repo.split(r#"data-tag="v1""#).nth(1).expect("a row for v1");
    assert!(row.contains("linux/amd64, linux/arm64"), "{row}");
    let host = node.addr().to_string();
    assert!(
        repo.contains(&format!("docker pull {host}/multi/app")),
        "{repo}"
    );

    let page = send(node.get("/ui/r/multi/app/-/v1"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(page.matches(r#"class="child""#).count(), 2, "{page}");
    assert!(page.contains(&format!("docker pull {host}/multi/app:v1")));
    let arm = children[1]["digest"].as_str().unwrap();
    assert!(page.contains(&format!("/ui/r/multi/app/-/{arm}")));

    let image = send(node.get(&format!("/ui/r/multi/app/-/{arm}")))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(image.matches(r#"class="layer""#).count(), 1, "{image}");
    assert!(image.contains(OCI_LAYER));
    assert!(
        image.contains("2.9 KiB") || image.contains("3.0 KB"),
        "{image}"
    );
    assert!(image.contains("COPY app-arm64 /app"));
    assert!(image.contains("linux/arm64"));
    // The one node holds every blob.
    let holders = image.split(r#"class="holders">"#).nth(1).unwrap();
    assert!(holders.starts_with(&host), "{holders}");

    // 60 tags: a first page of 50, and the rest after it.
    for i in 0..60 {
        node.push_manifest("multi/app", &format!("t{i:02}"), OCI_INDEX, &index)
            .await;
    }
    let first = send(node.get("/ui/r/multi/app"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(first.matches(r#"class="tag""#).count(), 50);
    let next = first
        .split(r#"id="next" rel="next" href=""#)
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a next page")
        .replace("&amp;", "&");
    let second = send(node.get(&next)).await.text().await.unwrap();
    assert_eq!(second.matches(r#"class="tag""#).count(), 11, "{next}");
    assert!(!second.contains(r#"id="next""#));
}

#[tokio::test]
async fn ui_cluster_page_marks_a_stopped_node_down() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.nodes[0]
        .server()
        .cluster()
        .status()
        .leader_id
        .unwrap();
    let victim = cluster
        .nodes
        .iter()
        .position(|n| n.server().cluster().id() != leader)
        .unwrap();
    let victim_id = cluster.nodes[victim].server().cluster().id();
    let watcher = (0..3).find(|i| *i != victim).unwrap();
    let row = |page: &str, id: u64| -> String {
        page.split(&format!(r#"data-node-id="{id}""#))
            .nth(1)
            .map(|r| r.split("</tr>").next().unwrap().to_owned())
            .unwrap_or_default()
    };
    let page = send(cluster.nodes[watcher].get("/ui/cluster"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains(r#"http-equiv="refresh""#));
    assert_eq!(page.matches(r#"data-state="up""#).count(), 3, "{page}");
    assert!(row(&page, leader).contains("leader"));
    cluster.nodes[victim].stop().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = send(cluster.nodes[watcher].get("/ui/cluster"))
            .await
            .text()
            .await
            .unwrap();
        if row(&page, victim_id).contains(r#"data-state="down""#) {
            assert_eq!(page.matches(r#"data-state="up""#).count(), 2, "{page}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {victim_id} never shown down: {page}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn ui_lets_owners_manage_their_teams_grants_and_robots_and_no_one_else() {
    let (node, _files) = scene().await;
    let org = json!({ "put_org": { "name": "acme", "owner": "rita" } });
    assert_eq!(
        send(node.post("/_berth/access").json(&org)).await.status(),
        StatusCode::NO_CONTENT
    );
    let mut rita = Browser::new(&node);
    rita.sign_in("rita", PASSWORD).await;
    let page = rita.get("/ui/access").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Organization acme"), "{}", page.body);
    for form in [
        vec![("op", "put-team"), ("org", "acme"), ("team", "dev")],
        vec![
            ("op", "add-member"),
            ("org", "acme"),
            ("team", "dev"),
            ("user", "root"),
        ],
        vec![
            ("op", "grant"),
            ("resource", "acme/*"),
            ("grantee", "team:acme/dev"),
            ("level", "write"),
        ],
    ] {
        let done = rita.post("/ui/access", &form).await;
        assert_eq!(
            done.status,
            StatusCode::SEE_OTHER,
            "{form:?}: {}",
            done.body
        );
        rita.get("/ui/access").await;
    }
    let state = json_body(send(node.get("/_berth/access")).await).await;
    assert_eq!(
        state["organizations"]["acme"]["teams"]["dev"],
        json!(["root"])
    );
    assert!(state["grants"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["level"] == "write" && g["resource"] == json!({ "namespace": "acme" })));

    // A robot's secret shows once, on the page that made it.
    let made = rita
        .post(
            "/ui/access",
            &[
                ("op", "put-robot"),
                ("name", "acme+ci"),
                ("level", "write"),
                ("days", "7"),
            ],
        )
        .await;
    assert_eq!(made.status, StatusCode::OK, "{}", made.body);
    let secret = made
        .body
        .split(r#"id="robot-secret" type="text" readonly value=""#)
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap();
    assert_eq!(secret.len(), 64);
    let robot = send(
        reqwest::Client::new()
            .get(node.url("/v2/acme/app/tags/list"))
            .basic_auth("acme+ci", Some(secret)),
    )
    .await;
    assert_eq!(robot.status(), StatusCode::OK);
    assert!(!rita.get("/ui/access").await.body.contains(secret));

    // Outside her organization rita may change nothing; without the token
    // neither may root.
    rita.get("/ui/access").await;
    let refused = rita
        .post(
            "/ui/access",
            &[
                ("op", "grant"),
                ("resource", "secret/*"),
                ("grantee", "user:rita"),
                ("level", "read"),
            ],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.body.contains(r#"id="error""#));
    let mut root = Browser::new(&node);
    root.sign_in("root", PASSWORD).await;
    let forged = root
        .post(
            "/ui/access",
            &[
                ("op", "delete-team"),
                ("org", "acme"),
                ("team", "dev"),
                ("csrf", ""),
            ],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let state = json_body(send(node.get("/_berth/access")).await).await;
    assert!(state["organizations"]["acme"]["teams"]["dev"].is_array());
    // Anonymous visitors are asked to sign in.
    assert_eq!(
        Browser::new(&node).get("/ui/access").await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// Every field a person fills or reads has a label: `for` its id, or
/// around it.
fn unlabelled_fields(html: &str) -> Vec<String> {
    let mut missing = Vec::new();
    for (at, _) in html
        .match_indices("<input")
        .chain(html.match_indices("<select"))
    {
        let tag = &html[at..at + html[at..].find('>').unwrap()];
        if tag.contains(r#"type="hidden""#) {
            continue;
        }
        let by_id = tag
            .split(r#"id=""#)
            .nth(1)
            .and_then(|r| r.split('"').next())
            .is_some_and(|id| html.contains(&format!(r#"for="{id}""#)));
        let before = &html[..at];
        let wrapped = before.rfind("<label").unwrap_or(0) > before.rfind("</label>").unwrap_or(0);
        if !by_id && !wrapped {
            missing.push(tag.to_owned());
        }
    }
    missing
}

#[tokio::test]
async fn ui_pages_have_landmarks_and_labelled_fields() {
    let (node, _files) = scene().await;
    let mut root = Browser::new(&node);
    root.sign_in("root", PASSWORD).await;
    for path in [
        "/ui/",
        "/ui/signin",
        "/ui/r/acme/app",
        "/ui/r/acme/app/-/v1",
        "/ui/cluster",
        "/ui/access",
        "/ui/r/no/such",
    ] {
        let page = root.get(path).await;
        let html = &page.body;
        for landmark in [
            r#"<html lang="en">"#,
            "<header",
            r#"<nav aria-label="Main">"#,
            r#"<main id="main">"#,
            r##"href="#main""##,
        ] {
            assert!(html.contains(landmark), "{path} lacks {landmark}");
        }
        assert_eq!(unlabelled_fields(html), Vec::<String>::new(), "{path}");
        assert_eq!(
            html.matches("<h1").count(),
            1,
            "{path}: one heading names the page"
        );
    }
}
