//! Tag lists and the catalog: lexical order and `n`/`last` pagination
//! followed through `Link` headers.

use reqwest::header::{CONTENT_TYPE, LINK};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

/// Upper bound on pages followed, so a Link loop fails instead of hanging.
const MAX_PAGES: usize = 100;

/// Follows `Link: <…>; rel="next"` from `first` to the end. Returns every
/// page's list under `key` and the number of pages.
async fn follow_pages(node: &TestNode, first: &str, key: &str, n: usize) -> (Vec<String>, usize) {
    let mut items = Vec::new();
    let mut next = Some(first.to_owned());
    let mut pages = 0;
    while let Some(path) = next.take() {
        pages += 1;
        assert!(pages <= MAX_PAGES, "pagination does not end");
        let resp = send(node.get(&path)).await;
        assert_eq!(resp.status(), StatusCode::OK, "GET {path}");
        assert!(header(&resp, CONTENT_TYPE.as_str()).starts_with("application/json"));
        next = resp
            .headers()
            .get(LINK)
            .map(|v| parse_next(v.to_str().unwrap(), n));
        let body: Value = json_body(resp).await;
        let page: Vec<String> = serde_json::from_value(body[key].clone())
            .unwrap_or_else(|e| panic!("{key} of {path} is not a list of strings ({e}): {body}"));
        assert!(
            page.len() <= n,
            "page {path} has {} items, more than n={n}",
            page.len()
        );
        if next.is_some() {
            assert_eq!(page.len(), n, "a page followed by more is full: {path}");
        }
        items.extend(page);
    }
    (items, pages)
}

/// The target of `<target>; rel="next"`, checking it keeps `n` and names `last`.
fn parse_next(link: &str, n: usize) -> String {
    let (target, rest) = link
        .strip_prefix('<')
        .and_then(|l| l.split_once('>'))
        .unwrap_or_else(|| panic!("Link {link:?} is not <target>; rel=\"next\""));
    assert_eq!(rest.trim(), "; rel=\"next\"", "Link {link:?}");
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    assert!(
        query.split('&').any(|p| p == format!("n={n}")),
        "Link {link:?} keeps n={n}"
    );
    assert!(
        query.split('&').any(|p| p.starts_with("last=")),
        "Link {link:?} names last"
    );
    target.to_owned()
}

/// Lexical (byte) order, as the spec requires.
fn sorted(items: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = items.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn tags_are_sorted_and_paginated() {
    let node = TestNode::start().await;
    let image = node.push_image("tagged/repo", "latest").await;
    let tags = [
        "v10", "v2", "v1", "A", "Z9", "_under", "b.1", "b-1", "b_1", "0", "9.9", "v1.0", "v1-rc",
        "zz", "latest",
    ];
    for tag in tags.iter().filter(|t| **t != "latest") {
        node.push_manifest("tagged/repo", tag, OCI_MANIFEST, &image.manifest)
            .await;
    }
    let want = sorted(&tags);

    let resp = send(node.get("/v2/tagged/repo/tags/list")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get(LINK).is_none(), "one page needs no Link");
    let body = json_body(resp).await;
    assert_eq!(body["name"], "tagged/repo");
    assert_eq!(body["tags"], json!(want));

    for n in [1, 2, 4, 7, 14, 15, 16] {
        let (all, pages) = follow_pages(
            &node,
            &format!("/v2/tagged/repo/tags/list?n={n}"),
            "tags",
            n,
        )
        .await;
        assert_eq!(all, want, "n={n}");
        assert!(pages >= want.len().div_ceil(n), "n={n}: {pages} pages");
    }

    // `last` alone starts after the given tag, which need not exist.
    let body = json_body(send(node.get("/v2/tagged/repo/tags/list?last=v1")).await).await;
    let after: Vec<&String> = want.iter().filter(|t| t.as_str() > "v1").collect();
    assert_eq!(body["tags"], json!(after));
    let body = json_body(send(node.get("/v2/tagged/repo/tags/list?last=c")).await).await;
    let after: Vec<&String> = want.iter().filter(|t| t.as_str() > "c").collect();
    assert_eq!(body["tags"], json!(after));
    let body = json_body(send(node.get("/v2/tagged/repo/tags/list?n=3&last=zz")).await).await;
    assert_eq!(body["tags"], json!([]));
}

#[tokio::test]
async fn tags_of_one_repository_only() {
    let node = TestNode::start().await;
    node.push_image("r", "in-r").await;
    node.push_image("r-x", "in-r-x").await;
    node.push_image("r/x", "in-r-slash-x").await;
    for (repo, tag) in [("r", "in-r"), ("r-x", "in-r-x"), ("r/x", "in-r-slash-x")] {
        let body = json_body(send(node.get(&format!("/v2/{repo}/tags/list"))).await).await;
        assert_eq!(body["tags"], json!([tag]), "{repo}");
    }
}

#[tokio::test]
async fn tags_of_an_unknown_repository() {
    let node = TestNode::start().await;
    assert_oci_error(
        send(node.get("/v2/no/such/repo/tags/list")).await,
        404,
        "NAME_UNKNOWN",
    )
    .await;
    node.push_image("known", "v1").await;
    assert_oci_error(
        send(node.get("/v2/know/tags/list")).await,
        404,
        "NAME_UNKNOWN",
    )
    .await;
    assert_oci_error(
        send(node.get("/v2/known/x/tags/list")).await,
        404,
        "NAME_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn catalog_is_sorted_and_paginated() {
    let node = TestNode::start().await;
    let empty = json_body(send(node.get("/v2/_catalog")).await).await;
    assert_eq!(empty["repositories"], json!([]));

    let repos = [
        "zeta",
        "alpha",
        "alpha/beta",
        "alpha-beta",
        "alpha.beta",
        "alpha_beta",
        "alpha/beta/gamma",
        "a0",
        "m/n/o/p",
        "library/alpine",
        "library/busybox",
        "0day",
    ];
    for repo in repos {
        node.push_image(repo, "v1").await;
    }
    let want = sorted(&repos);

    let resp = send(node.get("/v2/_catalog")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get(LINK).is_none());
    assert_eq!(json_body(resp).await["repositories"], json!(want));

    for n in [1, 2, 5, 11, 12, 13] {
        let (all, _) = follow_pages(&node, &format!("/v2/_catalog?n={n}"), "repositories", n).await;
        assert_eq!(all, want, "n={n}");
    }
    // A name with slashes as `last`, percent-encoded or not.
    let after: Vec<&String> = want.iter().filter(|r| r.as_str() > "alpha/beta").collect();
    for last in ["alpha/beta", "alpha%2Fbeta"] {
        let body = json_body(send(node.get(&format!("/v2/_catalog?last={last}"))).await).await;
        assert_eq!(body["repositories"], json!(after), "last={last}");
    }
}
