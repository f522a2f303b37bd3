//! `berth backup`, and (in `restore`) `berth restore`.
//!
//! A backup directory:
//!
//! ```text
//! <out>/
//!   backup.json                   the last complete backup: its snapshot file,
//!                                 Raft metadata, blob count and bytes; written
//!                                 last, durably, so it always names a snapshot
//!                                 whose every blob is in blobs/
//!   snapshot-<id>.snap            the replicated state, record by record
//!   blobs/<alg>/<2 hex>/<hex>     blob content, as in a data directory
//!   tmp/<random>                  a download in progress
//!   lock                          held while a backup runs
//! ```
//!
//! Blobs are named by digest and never change, so a second backup into the
//! same directory fetches only the blobs it lacks, and an interrupted one is
//! finished by running it again. Until a run completes, `backup.json` still
//! names the previous complete backup.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytesize::ByteSize;
use clap::Args;
use futures_util::{StreamExt as _, TryStreamExt as _};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt as _;

use super::client::{Client, Connection};
use super::import::progress::{Progress, ProgressMode, Reporter};
use super::CliResult;
use crate::api::backup::SNAPSHOT_META_HEADER;
use crate::cluster::recover::{self, Records};
use crate::cluster::types::SnapshotMeta;
use crate::db::{keys, Cf};
use crate::oci::Digest;
use crate::storage::Layout;

mod restore;

pub use restore::{run_restore, RestoreArgs, RestoreSummary};

/// The record of the last complete backup in a backup directory.
const RECORD: &str = "backup.json";
/// How long a download may go without a byte before it is given up.
const STALL: Duration = Duration::from_secs(60);
/// Attempts per blob before it counts as a problem.
const ATTEMPTS: u32 = 3;

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The backup directory: created if missing; a directory holding an
    /// earlier backup gets only what it lacks.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Re-hash the blobs already in the directory instead of trusting a
    /// file of the right size.
    #[arg(long)]
    pub verify: bool,
    /// Blobs downloaded at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallel: u16,
    /// How progress is shown on stderr: `auto` draws a bar on a terminal
    /// and prints a line every 5 s elsewhere.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub conn: Connection,
}

/// What `backup.json` holds.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    /// The snapshot file, in the backup directory.
    snapshot: String,
    meta: SnapshotMeta,
    blobs: u64,
    bytes: u64,
    /// Seconds since the epoch.
    finished: u64,
}

/// Counters a backup's tasks (or a restore) add to as they go.
#[derive(Default)]
struct Counters {
    blobs: AtomicU64,
    copied: AtomicU64,
    present: AtomicU64,
    /// Copies in the backup that failed `--verify`, fetched again.
    replaced: AtomicU64,
    bytes_copied: AtomicU64,
    /// Bytes downloaded so far, blobs still arriving included.
    bytes_received: AtomicU64,
    problems: Mutex<Vec<String>>,
}

impl Counters {
    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    fn add(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn problem(&self, text: String) {
        self.problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(text);
    }
}

impl Progress for Counters {
    fn line(&self, elapsed: Duration) -> String {
        let g = Self::get;
        let bytes = g(&self.bytes_received);
        let done = g(&self.copied) + g(&self.present);
        let mut line = format!(
            "[{done}/{} blobs] {} copied, {} already present; {} ({}/s)",
            g(&self.blobs),
            g(&self.copied),
            g(&self.present),
            ByteSize(bytes),
            ByteSize((bytes as f64 / elapsed.as_secs_f64().max(0.001)) as u64),
        );
        let problems = Progress::problems(self).len();
        if problems > 0 {
            line.push_str(&format!("; {problems} problems"));
        }
        line
    }

    fn problems(&self) -> Vec<String> {
        self.problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// What a backup did (`--json` prints this).
#[derive(Debug, Serialize)]
pub struct BackupSummary {
    pub out: PathBuf,
    pub node: String,
    /// The log index the snapshot includes every write up to.
    pub snapshot_index: u64,
    pub snapshot_bytes: u64,
    /// Blobs the snapshot names, and their bytes.
    pub blobs: u64,
    pub blob_bytes: u64,
    pub copied: u64,
    pub bytes_copied: u64,
    /// Already in the directory (trusted by size, or re-hashed with
    /// `--verify`).
    pub present: u64,
    pub present_verified: bool,
    /// Copies in the directory that failed `--verify`, fetched again.
    pub replaced: u64,
    pub seconds: f64,
    /// Whether the backup is complete: every blob present, `backup.json`
    /// written.
    pub complete: bool,
    pub problems: Vec<String>,
}

impl BackupSummary {
    fn render(&self) -> String {
        let mut out = format!(
            "backup of {} into {}\n\
             snapshot         up to log index {}, {}\n\
             blobs            {} named, {}: {} copied ({}), {} already present{}\n\
             time             {:.1} s, {}/s\n",
            self.node,
            self.out.display(),
            self.snapshot_index,
            ByteSize(self.snapshot_bytes),
            self.blobs,
            ByteSize(self.blob_bytes),
            self.copied,
            ByteSize(self.bytes_copied),
            self.present,
            if self.present_verified {
                " (re-hashed)"
            } else {
                " (sizes checked)"
            },
            self.seconds,
            ByteSize(
                ((self.bytes_copied + self.snapshot_bytes) as f64 / self.seconds.max(0.001)) as u64
            ),
        );
        if self.replaced > 0 {
            out.push_str(&format!(
                "replaced         {} copies in the directory failed their digest check and were \
                 fetched again\n",
                self.replaced
            ));
        }
        if self.complete {
            out.push_str(
                "verified         every blob the snapshot names is in the backup, each new one \
                 checked against its digest\n",
            );
        } else {
            out.push_str(&format!(
                "INCOMPLETE       {} problem(s); backup.json still names the previous complete \
                 backup. Run again to finish.\n",
                self.problems.len()
            ));
            for p in &self.problems {
                out.push_str(&format!("  {p}\n"));
            }
        }
        out
    }
}

pub async fn run_backup(args: BackupArgs) -> CliResult<()> {
    let started = Instant::now();
    // No overall deadline: downloads are bounded by STALL instead.
    let client = Arc::new(Client::with_timeout(
        &args.conn,
        Duration::from_secs(7 * 24 * 3600),
    )?);
    let dir = Layout::new(&args.out);
    std::fs::create_dir_all(dir.blobs_root())
        .map_err(|e| format!("{}: {e}", args.out.display()))?;
    let _lock = lock(&args.out)?;
    // What an interrupted run was downloading: never renamed, never read.
    let _ = std::fs::remove_dir_all(dir.tmp_dir());
    std::fs::create_dir_all(dir.tmp_dir())?;

    let (meta, snap_path, snapshot_bytes) = fetch_snapshot(&client, &args.out).await?;
    let blobs = snapshot_blobs(&snap_path)?;
    let counters = Arc::new(Counters::default());
    counters.blobs.store(blobs.len() as u64, Ordering::Relaxed);
    let reporter = Reporter::start(counters.clone(), args.progress, started);
    let verify = args.verify;
    futures_util::stream::iter(blobs.iter().cloned())
        .for_each_concurrent(args.parallel as usize, |(digest, size)| {
            let (client, dir, counters) = (client.clone(), dir.clone(), counters.clone());
            async move {
                match backup_blob(&client, &dir, &digest, size, verify, &counters).await {
                    Ok(true) => Counters::add(&counters.present),
                    Ok(false) => Counters::add(&counters.copied),
                    Err(e) => counters.problem(format!("{digest}: {e}")),
                }
            }
        })
        .await;
    drop(reporter);

    let problems = Progress::problems(&*counters);
    let blob_bytes = blobs.iter().map(|(_, s)| s).sum();
    let complete = problems.is_empty();
    if complete {
        publish(&args.out, &snap_path, &meta, blobs.len() as u64, blob_bytes)?;
    } else {
        // The next run takes a fresh snapshot: this one names blobs it lacks.
        let _ = std::fs::remove_file(&snap_path);
    }
    let g = Counters::get;
    let summary = BackupSummary {
        out: args.out.clone(),
        node: args.conn.node.clone(),
        snapshot_index: meta.last_log_id.map_or(0, |l| l.index),
        snapshot_bytes,
        blobs: blobs.len() as u64,
        blob_bytes,
        copied: g(&counters.copied),
        bytes_copied: g(&counters.bytes_copied),
        present: g(&counters.present),
        present_verified: verify,
        replaced: g(&counters.replaced),
        seconds: started.elapsed().as_secs_f64(),
        complete,
        problems,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", summary.render());
    }
    if !complete {
        return Err(format!(
            "the backup is incomplete: {} problem(s)",
            summary.problems.len()
        )
        .into());
    }
    Ok(())
}

/// Holds the backup directory's lock until dropped: two backups into one
/// directory would remove each other's snapshot and downloads.
fn lock(out: &Path) -> CliResult<File> {
    use std::os::fd::AsRawFd as _;
    let path = out.join("lock");
    let file = File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: flock on a descriptor this function owns; released when the
    // file is closed.
    let held = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if held != 0 {
        return Err(format!(
            "{}: another backup into this directory is running",
            out.display()
        )
        .into());
    }
    Ok(file)
}

/// Downloads a fresh snapshot into `out` under its own name: its metadata,
/// its path and its size.
async fn fetch_snapshot(client: &Client, out: &Path) -> CliResult<(SnapshotMeta, PathBuf, u64)> {
    let resp = client.get_raw("/_berth/backup/snapshot").await?;
    let meta: SnapshotMeta = resp
        .headers()
        .get(SNAPSHOT_META_HEADER)
        .ok_or("the node sent no snapshot metadata")
        .and_then(|v| v.to_str().map_err(|_| "unreadable snapshot metadata"))
        .map(serde_json::from_str)??;
    let expected = resp.content_length();
    let tmp = Layout::new(out).tmp_file();
    let bytes = download(resp, &tmp, None, None).await?;
    if expected.is_some_and(|e| e != bytes) {
        return Err(format!("the snapshot ended after {bytes} of {expected:?} bytes").into());
    }
    let path = out.join(format!("snapshot-{}.snap", meta.snapshot_id));
    std::fs::rename(&tmp, &path)?;
    Ok((meta, path, bytes))
}

/// Streams a response body into `path` (fsynced), feeding `hasher` and
/// counting into `received`; the byte count. A body that stalls for
/// [`STALL`] fails.
async fn download(
    resp: reqwest::Response,
    path: &Path,
    mut hasher: Option<&mut crate::oci::Hasher>,
    received: Option<&AtomicU64>,
) -> CliResult<u64> {
    let mut file = tokio::fs::File::create(path).await?;
    let mut body = resp.bytes_stream();
    let mut bytes = 0u64;
    loop {
        let chunk = tokio::time::timeout(STALL, body.try_next())
            .await
            .map_err(|_| format!("no data for {} s", STALL.as_secs()))??;
        let Some(chunk) = chunk else { break };
        if let Some(h) = hasher.as_deref_mut() {
            h.update(&chunk);
        }
        file.write_all(&chunk).await?;
        bytes += chunk.len() as u64;
        if let Some(r) = received {
            r.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
    }
    file.sync_all().await?;
    Ok(bytes)
}

/// Every blob the snapshot at `path` names, with its size, in digest order.
fn snapshot_blobs(path: &Path) -> CliResult<Vec<(Digest, u64)>> {
    let mut blobs = Vec::new();
    for record in Records::open(path).map_err(|e| format!("{}: {e}", path.display()))? {
        let (cf, key, value) = record.map_err(|e| format!("{}: {e}", path.display()))?;
        if cf != Cf::Blobs {
            continue;
        }
        let digest = std::str::from_utf8(&key)
            .ok()
            .and_then(|k| k.parse::<Digest>().ok())
            .ok_or_else(|| format!("{}: a blob record with a bad digest", path.display()))?;
        let (size, _) = keys::parse_blob_value(&value)
            .ok_or_else(|| format!("{}: a bad blob record for {digest}", path.display()))?;
        blobs.push((digest, size));
    }
    Ok(blobs)
}

/// Puts one blob in the backup unless it is there; whether it was.
async fn backup_blob(
    client: &Client,
    dir: &Layout,
    digest: &Digest,
    size: u64,
    verify: bool,
    counters: &Counters,
) -> CliResult<bool> {
    let target = dir.blob(digest);
    if std::fs::metadata(&target).is_ok_and(|m| m.len() == size) {
        if !verify {
            return Ok(true);
        }
        let (d, t) = (digest.clone(), target.clone());
        match tokio::task::spawn_blocking(move || hash_file(&d, &t)).await? {
            Ok(()) => return Ok(true),
            // Fetched again below, replacing the bad copy.
            Err(e) => {
                tracing::warn!(%digest, path = %target.display(), error = %e, "the backup's copy is bad; fetching it again");
                Counters::add(&counters.replaced);
            }
        }
    }
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
        }
        match fetch_blob(client, dir, digest, size, &target, counters).await {
            Ok(()) => {
                counters.bytes_copied.fetch_add(size, Ordering::Relaxed);
                return Ok(false);
            }
            // The node no longer has it: asking again will not help.
            Err(e) if e.to_string().starts_with("404") => {
                return Err(format!(
                    "{e}: deleted since the snapshot; the next backup's snapshot will not name it"
                )
                .into())
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(last.into())
}

async fn fetch_blob(
    client: &Client,
    dir: &Layout,
    digest: &Digest,
    size: u64,
    target: &Path,
    counters: &Counters,
) -> CliResult<()> {
    let resp = client
        .get_raw(&format!("/_berth/backup/blobs/{digest}"))
        .await?;
    let tmp = dir.tmp_file();
    let mut hasher = digest.algorithm().hasher();
    let result = download(
        resp,
        &tmp,
        Some(&mut hasher),
        Some(&counters.bytes_received),
    )
    .await;
    let checked = result.and_then(|bytes| {
        let actual = hasher.finish();
        if bytes != size {
            Err(format!("got {bytes} of {size} bytes").into())
        } else if &actual != digest {
            Err(format!("the bytes received hash to {actual}").into())
        } else {
            Ok(())
        }
    });
    if let Err(e) = checked {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let parent = target.parent().expect("blob paths have a parent");
    std::fs::create_dir_all(parent)?;
    std::fs::rename(&tmp, target)?;
    Ok(())
}

/// Checks that the file at `path` hashes to `digest`.
fn hash_file(digest: &Digest, path: &Path) -> std::io::Result<()> {
    use std::io::Read as _;
    let mut file = File::open(path)?;
    let mut hasher = digest.algorithm().hasher();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let actual = hasher.finish();
    match &actual == digest {
        true => Ok(()),
        false => Err(std::io::Error::other(format!("it hashes to {actual}"))),
    }
}

/// Makes the snapshot at `snap` the directory's complete backup, then
/// removes the snapshots of earlier ones.
fn publish(out: &Path, snap: &Path, meta: &SnapshotMeta, blobs: u64, bytes: u64) -> CliResult<()> {
    let name = snap
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("a snapshot path without a name")?
        .to_owned();
    let record = Record {
        snapshot: name.clone(),
        meta: meta.clone(),
        blobs,
        bytes,
        finished: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    recover::write_durably(&out.join(RECORD), &serde_json::to_vec_pretty(&record)?)?;
    for entry in std::fs::read_dir(out)? {
        let path = entry?.path();
        let file = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if file.starts_with("snapshot-") && file.ends_with(".snap") && file != name {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    #[test]
    fn commands_parse() {
        let cli = Cli::try_parse_from([
            "berth",
            "backup",
            "--out",
            "/b",
            "--node",
            "http://n:5000",
            "--verify",
        ])
        .unwrap();
        let Command::Backup(args) = cli.command else {
            panic!("backup parses as backup")
        };
        assert_eq!(args.out, PathBuf::from("/b"));
        assert_eq!(args.conn.node, "http://n:5000");
        assert!(args.verify && args.parallel == 4);
        let cli =
            Cli::try_parse_from(["berth", "restore", "--from", "/b", "--data-dir", "/d"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Restore(RestoreArgs { force: false, .. })
        ));
        assert!(Cli::try_parse_from(["berth", "restore", "--from", "/b"]).is_err());
    }

    #[test]
    fn a_complete_backup_is_recorded_and_older_snapshots_go() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path();
        std::fs::write(out.join("snapshot-old.snap"), "old").unwrap();
        std::fs::write(out.join("snapshot-new.snap"), "new").unwrap();
        let meta = SnapshotMeta {
            snapshot_id: "new".into(),
            ..Default::default()
        };
        publish(out, &out.join("snapshot-new.snap"), &meta, 3, 300).unwrap();
        let record: Record =
            serde_json::from_slice(&std::fs::read(out.join(RECORD)).unwrap()).unwrap();
        assert_eq!(record.snapshot, "snapshot-new.snap");
        assert_eq!((record.blobs, record.bytes), (3, 300));
        assert!(!out.join("snapshot-old.snap").exists());
        assert!(out.join("snapshot-new.snap").exists());
    }

    #[test]
    fn one_backup_at_a_time_per_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let held = lock(tmp.path()).unwrap();
        let e = lock(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("another backup"), "{e}");
        drop(held);
        lock(tmp.path()).unwrap();
    }

    #[test]
    fn a_file_is_checked_against_its_digest() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("b");
        std::fs::write(&path, b"blob").unwrap();
        hash_file(&Digest::sha256(b"blob"), &path).unwrap();
        let e = hash_file(&Digest::sha256(b"other"), &path).unwrap_err();
        assert!(e.to_string().contains(Digest::sha256(b"blob").as_str()));
    }

    #[test]
    fn an_incomplete_backup_says_so_and_lists_its_problems() {
        let mut s = BackupSummary {
            out: "/b".into(),
            node: "http://n:5000".into(),
            snapshot_index: 42,
            snapshot_bytes: 1000,
            blobs: 3,
            blob_bytes: 300,
            copied: 1,
            bytes_copied: 100,
            present: 1,
            present_verified: false,
            replaced: 0,
            seconds: 1.0,
            complete: true,
            problems: vec![],
        };
        let text = s.render();
        assert!(text.contains("up to log index 42"), "{text}");
        assert!(
            text.contains("1 copied") && text.contains("1 already present"),
            "{text}"
        );
        assert!(
            text.contains("every blob the snapshot names is in the backup"),
            "{text}"
        );
        s.complete = false;
        s.problems = vec!["sha256:ab: 503".into()];
        let text = s.render();
        assert!(
            text.contains("INCOMPLETE") && text.contains("sha256:ab: 503"),
            "{text}"
        );
    }
}
