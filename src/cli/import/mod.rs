//! `berth import DIR`: loads what a CNCF Distribution (registry 2.x) keeps
//! in its filesystem storage into a running node, through the node's own
//! registry API, so everything the node checks on a push is checked here
//! too. Per repository: the blobs its manifests name (several at a time,
//! each streamed and verified against its digest while it is read; mounted
//! instead when this run already put it in another repository), then the
//! manifests, children before the indexes listing them, untagged ones by
//! digest and tagged ones by tag. What the node already has is skipped, so
//! an interrupted import is finished by running it again.

mod layout;
mod node;
mod plan;
pub(crate) mod progress;
mod verify;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use clap::Args;
use futures_util::{StreamExt as _, TryStreamExt as _};

use self::layout::Root;
use self::node::{Mounted, Node, NodeError};
use self::plan::Plan;
use self::progress::{Counters, ProgressMode, Reporter};
use super::client::Connection;
use super::CliResult;
use crate::oci::Digest;

/// Tries of one blob's upload whose failure looks transient.
const BLOB_TRIES: u32 = 3;

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The storage root of the Distribution registry: the `rootdirectory`
    /// of its filesystem driver, which holds docker/registry/v2. Read
    /// only; a registry still serving it may keep running, but what it
    /// receives meanwhile may be missed.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub conn: Connection,
    /// Also import blobs linked into a repository that no manifest names
    /// (layers of deleted images, or of pushes that never finished).
    #[arg(long)]
    pub include_unreferenced_blobs: bool,
    /// Blobs uploaded at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Import only this repository (repeatable). [default: all]
    #[arg(long = "repository", value_name = "NAME")]
    pub repositories: Vec<String>,
    /// Read the root and report what would be imported, without
    /// contacting the node. Blob contents are not read.
    #[arg(long)]
    pub dry_run: bool,
    /// How progress is shown on stderr: `auto` draws a bar on a terminal
    /// and writes a line every 5 s elsewhere.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Blobs this run saw on the node, and those it could not import.
#[derive(Clone)]
enum Seen {
    /// Held in this repository: a mount from there saves an upload.
    In(String),
    /// Not importable (corrupt or missing); already reported.
    Bad,
}

struct Import {
    root: Root,
    node: Node,
    counters: Arc<Counters>,
    jobs: usize,
    seen: Mutex<HashMap<Digest, Seen>>,
}

pub async fn run(args: ImportArgs) -> CliResult<()> {
    let started = Instant::now();
    let root = Root::open(&args.dir)?;
    let scan = root.clone();
    let (mut repos, findings) = tokio::task::spawn_blocking(move || scan.repositories())
        .await
        .map_err(|e| format!("reading {}: {e}", args.dir.display()))??;
    if !args.repositories.is_empty() {
        let unknown: Vec<&String> = args
            .repositories
            .iter()
            .filter(|n| !repos.iter().any(|r| &r.name == *n))
            .collect();
        if !unknown.is_empty() {
            return Err(format!("{}: no repository {unknown:?}", args.dir.display()).into());
        }
        repos.retain(|r| args.repositories.contains(&r.name));
    }
    let counters = Arc::new(Counters::default());
    for finding in findings {
        counters.problem(finding);
    }
    Counters::add(&counters.repositories, repos.len() as u64);
    if args.dry_run {
        return dry_run(&root, &repos, args.include_unreferenced_blobs, &counters);
    }
    let node = Node::new(&args.conn)?;
    node.ping().await?;
    tracing::info!(source = %args.dir.display(), node = node.url(), repositories = repos.len(), "importing");
    let import = Arc::new(Import {
        root,
        node,
        counters: counters.clone(),
        jobs: usize::from(args.jobs),
        seen: Mutex::default(),
    });
    let reporter = Reporter::start(counters.clone(), args.progress, started);
    let mut stopped = None;
    for repo in repos {
        counters.set_current(&repo.name);
        let root = import.root.clone();
        let include = args.include_unreferenced_blobs;
        let plan = tokio::task::spawn_blocking(move || Plan::make(&root, &repo, include))
            .await
            .map_err(|e| e.to_string())?;
        if let Err(e) = import.repository(&plan).await {
            stopped = Some(e);
            break;
        }
        Counters::add(&counters.repositories_done, 1);
    }
    drop(reporter);
    let summary = counters.summary(
        &args.dir.display().to_string(),
        import.node.url(),
        started.elapsed(),
    );
    match args.json {
        true => println!("{}", serde_json::to_string_pretty(&summary)?),
        false => print!("{}", summary.render()),
    }
    if let Some(e) = stopped {
        return Err(format!(
            "the import stopped: {e}; run it again to go on (what the node has is skipped)"
        )
        .into());
    }
    match summary.problems.len() {
        0 => Ok(()),
        n => Err(format!("the import finished with {n} problems (listed above)").into()),
    }
}

impl Import {
    /// Imports one repository. Problems are recorded and the import goes
    /// on; an error means the node stopped answering.
    async fn repository(self: &Arc<Self>, plan: &Plan) -> Result<(), NodeError> {
        let repo = plan.repo.as_str();
        tracing::debug!(
            repo,
            manifests = plan.manifests.len(),
            blobs = plan.blobs.len(),
            "repository"
        );
        Counters::add(
            &self.counters.blobs_unreferenced,
            plan.unreferenced_left_out,
        );
        let imported: HashSet<Digest> = futures_util::stream::iter(plan.blobs.clone())
            .map(|(digest, size)| {
                let this = self.clone();
                let repo = repo.to_owned();
                async move {
                    let ok = this.blob(&repo, &digest, size).await?;
                    Ok::<_, NodeError>(ok.then_some(digest))
                }
            })
            .buffer_unordered(self.jobs)
            .try_filter_map(|d| async move { Ok(d) })
            .try_collect()
            .await?;

        let mut done: HashSet<Digest> = HashSet::new();
        for digest in plan.order() {
            let blob_ok = |d: &Digest| imported.contains(d);
            let child_ok = |d: &Digest| done.contains(d);
            if plan.blocked(&digest, &blob_ok, &child_ok).is_some() {
                continue;
            }
            if self.manifest(plan, &digest).await? {
                done.insert(digest);
            }
        }
        // Every manifest that did not go, with the tags it leaves out.
        for (digest, (why, tags)) in &plan.unusable {
            self.counters.problem(format!(
                "{repo}: manifest {digest}{} not imported: {why}",
                tagged(tags)
            ));
        }
        for (digest, m) in &plan.manifests {
            if done.contains(digest) {
                continue;
            }
            let blob_ok = |d: &Digest| imported.contains(d);
            let child_ok = |d: &Digest| done.contains(d);
            if let Some(why) = plan.blocked(digest, &blob_ok, &child_ok) {
                self.counters.problem(format!(
                    "{repo}: manifest {digest}{} not imported: {why}",
                    tagged(&m.tags)
                ));
            }
        }
        Ok(())
    }

    /// Makes sure `repo` holds the blob; whether it does in the end.
    async fn blob(
        &self,
        repo: &str,
        digest: &Digest,
        size: Option<u64>,
    ) -> Result<bool, NodeError> {
        let path = self.root.blob_path(digest);
        let mount_from = match self.seen_as(digest) {
            Some(Seen::Bad) => return Ok(false),
            Some(Seen::In(other)) if other != repo => Some(other),
            _ => None,
        };
        let Some(size) = size else {
            self.counters.problem(format!(
                "blob {digest} ({}): missing from the storage root",
                path.display()
            ));
            self.see(digest, Seen::Bad);
            return Ok(false);
        };
        if self.ask(self.node.blob_exists(repo, digest).await, repo)? == Some(true) {
            Counters::add(&self.counters.blobs_present, 1);
            self.see_in(digest, repo);
            return Ok(true);
        }
        // A mount costs no more than opening an upload, which it becomes
        // when the node cannot link the blob.
        let mut session = match self.ask(
            self.node.mount(repo, digest, mount_from.as_deref()).await,
            repo,
        )? {
            Some(Mounted::Done) => {
                Counters::add(&self.counters.blobs_mounted, 1);
                self.see_in(digest, repo);
                return Ok(true);
            }
            Some(Mounted::Upload(url)) => Some(url),
            None => return Ok(false),
        };
        for tries in 1..=BLOB_TRIES {
            let url = match session.take() {
                Some(url) => url,
                None => match self.ask(self.node.start_upload(repo).await, repo)? {
                    Some(url) => url,
                    None => return Ok(false),
                },
            };
            let file = match tokio::fs::File::open(&path).await {
                Ok(file) => file,
                Err(e) => {
                    self.counters
                        .problem(format!("blob {digest} ({}): {e}", path.display()));
                    self.see(digest, Seen::Bad);
                    self.node.cancel_upload(repo, url).await;
                    return Ok(false);
                }
            };
            let verdict = verify::Verdict::default();
            let stream = verify::verified(
                file,
                digest.clone(),
                verdict.clone(),
                self.counters.bytes_read.clone(),
            );
            let body = reqwest::Body::wrap_stream(stream);
            let result = self
                .node
                .put_blob(repo, url.clone(), digest, size, body)
                .await;
            if let Some(why) = verdict.failure() {
                self.counters.problem(format!(
                    "blob {digest} ({}): {why}; not imported",
                    path.display()
                ));
                self.see(digest, Seen::Bad);
                self.node.cancel_upload(repo, url).await;
                return Ok(false);
            }
            match result {
                Ok(()) => {
                    Counters::add(&self.counters.blobs_uploaded, 1);
                    Counters::add(&self.counters.bytes_uploaded, size);
                    self.see_in(digest, repo);
                    return Ok(true);
                }
                Err(e) if e.transient && tries < BLOB_TRIES => {
                    tracing::debug!(%digest, error = %e, "upload failed; trying again");
                    self.node.cancel_upload(repo, url).await;
                }
                Err(e) => {
                    self.node.cancel_upload(repo, url).await;
                    self.ask::<()>(Err(e), repo)?;
                    return Ok(false);
                }
            }
        }
        Ok(false)
    }

    /// Pushes one manifest: by each of its tags, or by digest when it has
    /// none. Whether the repository holds it in the end.
    async fn manifest(&self, plan: &Plan, digest: &Digest) -> Result<bool, NodeError> {
        let repo = plan.repo.as_str();
        let Some(m) = plan.manifests.get(digest) else {
            return Ok(false);
        };
        let there = self.ask(self.node.manifest_digest(repo, digest.as_str()).await, repo)?;
        let Some(there) = there else { return Ok(false) };
        let existed = there.as_ref() == Some(digest);
        let mut pushed = false;
        let mut references: Vec<&str> = m.tags.iter().map(String::as_str).collect();
        if references.is_empty() {
            references.push(digest.as_str());
        }
        let mut ok = true;
        for reference in references {
            let is_tag = reference != digest.as_str();
            if is_tag || !existed {
                let now = match is_tag {
                    true => self.ask(self.node.manifest_digest(repo, reference).await, repo)?,
                    false => Some(None),
                };
                match now {
                    Some(Some(d)) if &d == digest => {
                        Counters::add(&self.counters.tags_present, 1);
                        continue;
                    }
                    Some(_) => {}
                    None => {
                        ok = false;
                        continue;
                    }
                }
                let put = self
                    .node
                    .put_manifest(repo, reference, &m.media_type, m.bytes.clone())
                    .await;
                match self.ask(put, repo)? {
                    Some(answered) if answered.as_ref().is_none_or(|a| a == digest) => {
                        pushed = true;
                        if is_tag {
                            Counters::add(&self.counters.tags_pushed, 1);
                        }
                    }
                    Some(answered) => {
                        self.counters.problem(format!(
                            "{repo}:{reference}: the node stored {} for manifest {digest}",
                            answered.map(|a| a.to_string()).unwrap_or_default()
                        ));
                        ok = false;
                    }
                    None => ok = false,
                }
            }
        }
        match (existed, pushed) {
            (true, _) => Counters::add(&self.counters.manifests_present, 1),
            (false, true) => Counters::add(&self.counters.manifests_pushed, 1),
            (false, false) => {}
        }
        Ok(ok && (existed || pushed))
    }

    /// A node's answer: `Some` on success, `None` for a refusal (recorded as
    /// a problem), and an error when the node stopped answering.
    fn ask<T>(&self, answer: Result<T, NodeError>, repo: &str) -> Result<Option<T>, NodeError> {
        match answer {
            Ok(value) => Ok(Some(value)),
            Err(e) if e.transient => Err(e),
            Err(e) => {
                self.counters.problem(format!("{repo}: {e}"));
                Ok(None)
            }
        }
    }

    fn seen_as(&self, digest: &Digest) -> Option<Seen> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(digest).cloned()
    }

    fn see(&self, digest: &Digest, what: Seen) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.insert(digest.clone(), what);
    }

    /// Notes where a mount can come from; the first repository stays.
    fn see_in(&self, digest: &Digest, repo: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.entry(digest.clone())
            .or_insert_with(|| Seen::In(repo.to_owned()));
    }
}

/// ` (tags a, b)` for a manifest with tags.
fn tagged(tags: &[String]) -> String {
    match tags.len() {
        0 => String::new(),
        1 => format!(" (tag {})", tags[0]),
        _ => format!(" (tags {})", tags.join(", ")),
    }
}

/// What an import would push, read from the root alone.
fn dry_run(
    root: &Root,
    repos: &[layout::Repository],
    include_unreferenced: bool,
    counters: &Counters,
) -> CliResult<()> {
    let mut blobs: HashMap<Digest, u64> = HashMap::new();
    for repo in repos {
        let plan = Plan::make(root, repo, include_unreferenced);
        let tags: usize = plan.manifests.values().map(|m| m.tags.len()).sum();
        println!(
            "{}: {} tags, {} manifests, {} blobs",
            plan.repo,
            tags,
            plan.manifests.len(),
            plan.blobs.len()
        );
        for (digest, (why, tags)) in &plan.unusable {
            counters.problem(format!(
                "{}: manifest {digest}{} would not be imported: {why}",
                plan.repo,
                tagged(tags)
            ));
        }
        for (digest, size) in &plan.blobs {
            match size {
                Some(size) => {
                    blobs.insert(digest.clone(), *size);
                }
                None => counters.problem(format!(
                    "blob {digest} ({}): missing from the storage root",
                    root.blob_path(digest).display()
                )),
            }
        }
        Counters::add(&counters.blobs_unreferenced, plan.unreferenced_left_out);
    }
    let bytes: u64 = blobs.values().sum();
    println!(
        "{} repositories, {} distinct blobs, {}",
        repos.len(),
        blobs.len(),
        bytesize::ByteSize(bytes)
    );
    let left_out = counters
        .summary("", "", Default::default())
        .blobs_unreferenced_left_out;
    if left_out > 0 {
        println!("{left_out} blobs linked into repositories that no manifest names are left out (--include-unreferenced-blobs imports them)");
    }
    let problems = counters.problems();
    for p in &problems {
        println!("problem: {p}");
    }
    match problems.len() {
        0 => Ok(()),
        n => Err(format!("{n} problems (listed above)").into()),
    }
}
