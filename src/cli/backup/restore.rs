//! `berth restore`: a new one-node cluster from a backup directory.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytesize::ByteSize;
use clap::Args;
use serde::Serialize;

use super::{snapshot_blobs, Counters, Record, RECORD};
use crate::cli::import::progress::{ProgressMode, Reporter};
use crate::cli::CliResult;
use crate::cluster::recover::Offline;
use crate::db::Db;
use crate::storage::{stream, BlobStore, Layout};

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup directory (`berth backup --out`).
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    /// The new node's data directory: missing or empty.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Delete what the data directory holds first. The node must be
    /// stopped.
    #[arg(long)]
    pub force: bool,
    /// How progress is shown on stderr: `auto` draws a bar on a terminal
    /// and prints a line every 5 s elsewhere.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What a restore did (`--json` prints this).
#[derive(Debug, Serialize)]
pub struct RestoreSummary {
    pub data_dir: PathBuf,
    pub node_id: u64,
    pub snapshot_index: u64,
    pub blobs: u64,
    pub restored: u64,
    pub bytes: u64,
    /// Blob files that failed their digest check, with their paths.
    pub corrupt: Vec<String>,
    /// Blobs the snapshot names that the backup lacks.
    pub missing: Vec<String>,
}

pub async fn run_restore(args: RestoreArgs) -> CliResult<()> {
    let started = Instant::now();
    let record: Record = {
        let path = args.from.join(RECORD);
        let bytes = std::fs::read(&path).map_err(|e| {
            format!(
                "{}: {e} (not a complete backup made by `berth backup`)",
                path.display()
            )
        })?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?
    };
    let snap = args.from.join(&record.snapshot);
    let blobs = snapshot_blobs(&snap)?;
    prepare(&args.data_dir, args.force)?;
    let node_id = Offline::restore(&args.data_dir, &snap, &record.meta)
        .await?
        .node_id();

    let layout = Layout::new(&args.data_dir);
    let store = BlobStore::new(layout.clone(), Db::open(&layout.db())?);
    let backup = Layout::new(&args.from);
    let mut summary = RestoreSummary {
        data_dir: args.data_dir.clone(),
        node_id,
        snapshot_index: record.meta.last_log_id.map_or(0, |l| l.index),
        blobs: blobs.len() as u64,
        restored: 0,
        bytes: 0,
        corrupt: Vec::new(),
        missing: Vec::new(),
    };
    let counters = Arc::new(Counters::default());
    counters.blobs.store(blobs.len() as u64, Ordering::Relaxed);
    let reporter = Reporter::start(counters.clone(), args.progress, started);
    for (digest, size) in &blobs {
        let path = backup.blob(digest);
        let file = match File::open(&path) {
            Ok(f) if f.metadata().is_ok_and(|m| m.len() == *size) => f,
            Ok(_) => {
                let text = format!("{digest} at {}: not {size} bytes long", path.display());
                counters.problem(text.clone());
                summary.corrupt.push(text);
                continue;
            }
            Err(_) => {
                counters.problem(format!("{digest}: missing from the backup"));
                summary.missing.push(digest.to_string());
                continue;
            }
        };
        // Verified as it is copied in: a bad file is refused, not kept.
        let read = stream::read_range(file, 0, *size);
        match store.ingest(digest, read, Some(*size), None).await {
            Ok(_) => {
                summary.restored += 1;
                summary.bytes += size;
                Counters::add(&counters.copied);
                counters.bytes_received.fetch_add(*size, Ordering::Relaxed);
            }
            Err(e) => {
                let text = format!("{digest} at {}: {e}", path.display());
                counters.problem(text.clone());
                summary.corrupt.push(text);
            }
        }
    }
    drop(reporter);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", render_restore(&summary));
    }
    let bad = summary.corrupt.len() + summary.missing.len();
    if bad > 0 {
        return Err(format!(
            "{} blob(s) could not be restored ({} corrupt, {} missing); the rest were",
            bad,
            summary.corrupt.len(),
            summary.missing.len()
        )
        .into());
    }
    Ok(())
}

fn render_restore(s: &RestoreSummary) -> String {
    let mut out = format!(
        "restored into {} as node {}\n\
         state            up to log index {}; this node is the cluster's only voter\n\
         blobs            {} of {} restored and verified, {}\n",
        s.data_dir.display(),
        s.node_id,
        s.snapshot_index,
        s.restored,
        s.blobs,
        ByteSize(s.bytes),
    );
    for c in &s.corrupt {
        out.push_str(&format!("CORRUPT          {c}\n"));
    }
    for m in &s.missing {
        out.push_str(&format!("MISSING          {m}\n"));
    }
    out.push_str(&format!(
        "\nStart it (berth serve --data-dir {} ...), check `berth cluster status`, then start \
         new empty nodes that join it (--peers).\n",
        s.data_dir.display()
    ));
    out
}

/// Makes `dir` ready for a new node: missing or empty, or emptied with
/// `force` (unless a running node holds it).
fn prepare(dir: &Path, force: bool) -> CliResult<()> {
    let entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(format!("{}: {e}", dir.display()).into()),
    };
    if entries.is_empty() {
        return Ok(());
    }
    if !force {
        return Err(format!(
            "{} is not empty: restoring would replace a node's data. Give --force to delete \
             what it holds first",
            dir.display()
        )
        .into());
    }
    // A running node holds its database's lock: never delete under it.
    let db = Layout::new(dir).db();
    if db.join("CURRENT").is_file() {
        drop(Db::open(&db).map_err(|e| {
            format!(
                "{}: cannot open its database ({e}); is the node still running?",
                dir.display()
            )
        })?);
    }
    for path in entries {
        match path.is_dir() && !path.is_symlink() {
            true => std::fs::remove_dir_all(&path)?,
            false => std::fs::remove_file(&path)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_with_data_is_replaced_only_with_force() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        prepare(&dir, false).unwrap();
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("node-id"), "7\n").unwrap();
        let e = prepare(&dir, false).unwrap_err().to_string();
        assert!(e.contains("not empty") && e.contains("--force"), "{e}");
        assert!(dir.join("node-id").exists());
        prepare(&dir, true).unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        // A database in use is never deleted under its node.
        std::fs::write(dir.join("node-id"), "7\n").unwrap();
        let db = Db::open(&Layout::new(&dir).db()).unwrap();
        assert!(prepare(&dir, true).is_err());
        assert!(dir.join("node-id").exists());
        drop(db);
    }
}
