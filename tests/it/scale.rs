//! Metadata at scale, cut down to fit a CI run: 100,000 tags loaded through
//! the API into three `berth serve` processes. Every listing is complete
//! and sorted under `n`/`last` paging on every node; a fourth node joins
//! through a snapshot and lists the same; a node restarted with all of it
//! is ready within a bound.

use std::time::{Duration, Instant};

use futures_util::{stream, StreamExt};
use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;
use serde_json::json;

use crate::common::*;
use crate::processes::{Formation, ProcessCluster};

/// One repository with many tags: its tag listing is the long one.
const BIG_REPO: &str = "scale/big";
const BIG_TAGS: usize = 50_000;
/// Many repositories with a few tags each: the catalog is the long listing.
const SMALL_REPOS: usize = 500;
const SMALL_TAGS: usize = 100;
/// Concurrent writers while loading, spread over the nodes.
const CLIENTS: usize = 32;
/// How long a restarted node holding all of it may take to be ready.
const READY_BOUND: Duration = Duration::from_secs(10);

fn small_repo(r: usize) -> String {
    format!("scale/r{r:03}")
}

/// Every (repository, tag) the test writes. Tags are `t<i>` unpadded, so
/// their sorted order is not the order they were written in.
fn all_tags() -> Vec<(String, String)> {
    let big = (0..BIG_TAGS).map(|i| (BIG_REPO.to_owned(), format!("t{i}")));
    let small = (0..SMALL_REPOS)
        .flat_map(|r| (0..SMALL_TAGS).map(move |i| (small_repo(r), format!("t{i}"))));
    big.chain(small).collect()
}

/// Every listing a node must serve: the catalog, then each repository's
/// tags, each in the sorted order the API promises.
fn expected_listings() -> Vec<Vec<String>> {
    let mut repos: Vec<String> = (0..SMALL_REPOS).map(small_repo).collect();
    repos.push(BIG_REPO.to_owned());
    repos.sort();
    let mut listings = vec![repos.clone()];
    for repo in &repos {
        let count = if repo == BIG_REPO {
            BIG_TAGS
        } else {
            SMALL_TAGS
        };
        let mut tags: Vec<String> = (0..count).map(|i| format!("t{i}")).collect();
        tags.sort();
        listings.push(tags);
    }
    listings
}

/// A listing read page by page, `n` at a time, each page asked for after
/// the last item of the one before; the pages must come in order.
async fn paged(http: &reqwest::Client, base: &str, path: &str, key: &str, n: usize) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    loop {
        let mut url = format!("{base}{path}?n={n}");
        if let Some(last) = all.last() {
            url.push_str(&format!("&last={last}"));
        }
        let resp = send(http.get(&url)).await;
        assert_eq!(resp.status(), StatusCode::OK, "GET {url}");
        let body = json_body(resp).await;
        let page: Vec<String> = serde_json::from_value(body[key].clone()).unwrap_or_default();
        assert!(page.len() <= n, "GET {url}: {} items for n={n}", page.len());
        let done = page.len() < n;
        all.extend(page);
        if done {
            return all;
        }
    }
}

/// Every listing of node `base`, as [`expected_listings`] orders them.
async fn listings(http: &reqwest::Client, base: &str) -> Vec<Vec<String>> {
    let repos = paged(http, base, "/v2/_catalog", "repositories", 100).await;
    let mut all = vec![repos.clone()];
    for repo in &repos {
        let path = format!("/v2/{repo}/tags/list");
        all.push(paged(http, base, &path, "tags", 1000).await);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_thousand_tags_list_whole_on_every_node_and_a_joining_one() {
    let mut cluster = ProcessCluster::start(3, Formation::Expect, 10).await;
    let http = cluster.http.clone();
    let mut config = None;
    for repo in std::iter::once(BIG_REPO.to_owned()).chain((0..SMALL_REPOS).map(small_repo)) {
        config = Some(cluster.push_config_to(0, &repo).await);
    }
    let config = config.expect("a config blob");

    let bases: Vec<String> = (0..3).map(|i| cluster.base(i)).collect();
    let tags = all_tags();
    let total = tags.len();
    let started = Instant::now();
    let failures: Vec<String> = stream::iter(tags.into_iter().enumerate())
        .map(|(i, (repo, tag))| {
            let (http, config) = (http.clone(), config.clone());
            let url = format!("{}/v2/{repo}/manifests/{tag}", bases[i % bases.len()]);
            async move {
                let note = json!({ "annotations": { "n": format!("{repo}:{tag}") } });
                let body = image_manifest(&config, &[], note);
                let put = http.put(&url).header(CONTENT_TYPE, OCI_MANIFEST).body(body);
                match put.send().await {
                    Ok(r) if r.status() == StatusCode::CREATED => None,
                    Ok(r) => Some(format!("PUT {url}: {}", r.status())),
                    Err(e) => Some(format!("PUT {url}: {e}")),
                }
            }
        })
        .buffer_unordered(CLIENTS)
        .filter_map(|failed| async move { failed })
        .collect()
        .await;
    let took = started.elapsed();
    assert!(
        failures.is_empty(),
        "{} writes failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    eprintln!(
        "{total} manifest PUTs by {CLIENTS} clients over 3 nodes in {took:?}: {:.0}/s",
        total as f64 / took.as_secs_f64()
    );

    let want = expected_listings();
    for i in 0..3 {
        let started = Instant::now();
        let got = listings(&http, &cluster.base(i)).await;
        assert!(
            got == want,
            "node {i}'s listings differ from what was written"
        );
        eprintln!("node {i}: every listing, paged, in {:?}", started.elapsed());
    }

    // A node that joins now gets the state as a snapshot: the log it would
    // need is long gone (a snapshot every 5000 commands).
    let joined = cluster.join_node();
    cluster.leader().await;
    let log = cluster.log(joined);
    assert!(
        log.contains("installed a snapshot"),
        "the new node installed no snapshot:\n{log}"
    );
    let got = listings(&http, &cluster.base(joined)).await;
    assert!(
        got == want,
        "the joined node's listings differ from what was written"
    );

    let follower = (cluster.leader().await + 1) % 4;
    cluster.kill9(follower);
    let restarted = Instant::now();
    cluster.restart(follower).await;
    cluster.until_ready(follower).await;
    let ready = restarted.elapsed();
    eprintln!("node {follower} restarted with {total} tags: ready after {ready:?}");
    assert!(ready <= READY_BOUND, "ready only after {ready:?}");
    let got = listings(&http, &cluster.base(follower)).await;
    assert!(
        got == want,
        "the restarted node's listings differ from what was written"
    );
}
