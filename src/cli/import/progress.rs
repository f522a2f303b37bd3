//! What the import has done so far: counters every task adds to, a bar
//! redrawn on a terminal (or a line every few seconds elsewhere), and the
//! closing summary.

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytesize::ByteSize;
use serde::Serialize;

/// Counters shared by every task of one import.
#[derive(Default)]
pub struct Counters {
    pub repositories_done: AtomicU64,
    pub repositories: AtomicU64,
    pub tags_pushed: AtomicU64,
    pub tags_present: AtomicU64,
    pub manifests_pushed: AtomicU64,
    pub manifests_present: AtomicU64,
    pub blobs_uploaded: AtomicU64,
    pub blobs_mounted: AtomicU64,
    pub blobs_present: AtomicU64,
    pub blobs_unreferenced: AtomicU64,
    /// Bytes read from blob files, including uploads still running.
    pub bytes_read: Arc<AtomicU64>,
    /// Bytes of blobs the node accepted.
    pub bytes_uploaded: AtomicU64,
    problems: Mutex<Vec<String>>,
    /// The repository being imported, for the bar.
    current: Mutex<String>,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Records a problem; it is listed at the end and makes the exit
    /// status non-zero.
    pub fn problem(&self, text: String) {
        self.problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(text);
    }

    pub fn problems(&self) -> Vec<String> {
        self.problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_current(&self, repo: &str) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = repo.to_owned();
    }

    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn summary(&self, source: &str, node: &str, elapsed: Duration) -> Summary {
        let g = Self::get;
        Summary {
            source: source.to_owned(),
            node: node.to_owned(),
            repositories: g(&self.repositories_done),
            tags_pushed: g(&self.tags_pushed),
            tags_present: g(&self.tags_present),
            manifests_pushed: g(&self.manifests_pushed),
            manifests_present: g(&self.manifests_present),
            blobs_uploaded: g(&self.blobs_uploaded),
            blobs_mounted: g(&self.blobs_mounted),
            blobs_present: g(&self.blobs_present),
            blobs_unreferenced_left_out: g(&self.blobs_unreferenced),
            bytes_uploaded: g(&self.bytes_uploaded),
            seconds: elapsed.as_secs_f64(),
            problems: self.problems(),
        }
    }

    /// One line of where the import is.
    fn line(&self, elapsed: Duration) -> String {
        let g = Self::get;
        let read = g(&self.bytes_read);
        let rate = read as f64 / elapsed.as_secs_f64().max(0.001);
        let problems = self.problems.lock().map(|p| p.len()).unwrap_or_default();
        let current = self.current.lock().map(|c| c.clone()).unwrap_or_default();
        let mut line = format!(
            "[{}/{} repositories] {current}: blobs {} uploaded, {} mounted, {} present; {} read ({}/s); manifests {}",
            g(&self.repositories_done),
            g(&self.repositories),
            g(&self.blobs_uploaded),
            g(&self.blobs_mounted),
            g(&self.blobs_present),
            ByteSize(read),
            ByteSize(rate as u64),
            g(&self.manifests_pushed) + g(&self.manifests_present),
        );
        if problems > 0 {
            let _ = write!(line, "; {problems} problems");
        }
        line
    }
}

/// What a [`Reporter`] shows: a line of where the work is, and the
/// problems so far. Any long command's counters can implement it.
pub(crate) trait Progress: Send + Sync + 'static {
    fn line(&self, elapsed: Duration) -> String;
    fn problems(&self) -> Vec<String>;
}

impl Progress for Counters {
    fn line(&self, elapsed: Duration) -> String {
        Counters::line(self, elapsed)
    }

    fn problems(&self) -> Vec<String> {
        Counters::problems(self)
    }
}

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// A bar on a terminal, else a line every few seconds.
    Auto,
    /// A line every few seconds.
    Lines,
    /// Nothing until the summary.
    Off,
}

/// Shows progress until dropped; in lines mode, the last line then.
pub struct Reporter {
    task: Option<tokio::task::JoinHandle<()>>,
    bar: bool,
    counters: Arc<dyn Progress>,
    started: Instant,
}

impl Reporter {
    pub fn start(counters: Arc<dyn Progress>, mode: ProgressMode, started: Instant) -> Reporter {
        let bar = mode == ProgressMode::Auto && std::io::stderr().is_terminal();
        let every = match bar {
            true => Duration::from_millis(250),
            false => Duration::from_secs(5),
        };
        let shared = counters.clone();
        let task = (mode != ProgressMode::Off).then(|| {
            tokio::spawn(async move {
                let mut shown = 0;
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let line = counters.line(started.elapsed());
                    let mut err = std::io::stderr().lock();
                    if bar {
                        // Problems scroll above the bar as they come.
                        let problems = counters.problems();
                        for p in problems.iter().skip(shown) {
                            let _ = writeln!(err, "\r\x1b[2Kproblem: {p}");
                        }
                        shown = problems.len();
                        let width = terminal_width();
                        let line: String = line.chars().take(width.saturating_sub(1)).collect();
                        let _ = write!(err, "\r\x1b[2K{line}");
                    } else {
                        let _ = writeln!(err, "{line}");
                    }
                    let _ = err.flush();
                }
            })
        });
        Reporter {
            task,
            bar,
            counters: shared,
            started,
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let mut err = std::io::stderr().lock();
            let _ = match self.bar {
                true => write!(err, "\r\x1b[2K"),
                false => writeln!(err, "{}", self.counters.line(self.started.elapsed())),
            };
        }
    }
}

/// `COLUMNS`, else 100: the bar is cut to fit, not wrapped.
fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|&c: &usize| c >= 20)
        .unwrap_or(100)
}

/// What an import did, printed at its end (`--json` prints this).
#[derive(Debug, Serialize)]
pub struct Summary {
    pub source: String,
    pub node: String,
    pub repositories: u64,
    pub tags_pushed: u64,
    pub tags_present: u64,
    pub manifests_pushed: u64,
    pub manifests_present: u64,
    pub blobs_uploaded: u64,
    pub blobs_mounted: u64,
    pub blobs_present: u64,
    pub blobs_unreferenced_left_out: u64,
    pub bytes_uploaded: u64,
    pub seconds: f64,
    pub problems: Vec<String>,
}

impl Summary {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let rate = self.bytes_uploaded as f64 / self.seconds.max(0.001);
        let _ = writeln!(out, "imported {} into {}", self.source, self.node);
        let _ = writeln!(out, "  repositories: {}", self.repositories);
        let _ = writeln!(
            out,
            "  tags:         {} pushed, {} already there",
            self.tags_pushed, self.tags_present
        );
        let _ = writeln!(
            out,
            "  manifests:    {} pushed, {} already there",
            self.manifests_pushed, self.manifests_present
        );
        let _ = writeln!(
            out,
            "  blobs:        {} uploaded, {} mounted, {} already there",
            self.blobs_uploaded, self.blobs_mounted, self.blobs_present
        );
        let _ = writeln!(
            out,
            "  bytes:        {} uploaded in {:.1} s ({}/s)",
            ByteSize(self.bytes_uploaded),
            self.seconds,
            ByteSize(rate as u64)
        );
        if self.blobs_unreferenced_left_out > 0 {
            let _ = writeln!(
                out,
                "  left out:     {} blobs linked into repositories that no manifest names (--include-unreferenced-blobs imports them)",
                self.blobs_unreferenced_left_out
            );
        }
        match self.problems.len() {
            0 => out.push_str("  problems:     none\n"),
            n => {
                let _ = writeln!(out, "  problems:     {n}");
                for p in &self.problems {
                    let _ = writeln!(out, "    - {p}");
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_every_figure_and_problem() {
        let counters = Counters::default();
        Counters::add(&counters.repositories_done, 2);
        Counters::add(&counters.blobs_uploaded, 3);
        Counters::add(&counters.bytes_uploaded, 3 << 20);
        Counters::add(&counters.blobs_unreferenced, 1);
        counters.problem("blob sha256:ab (x/data): corrupt".into());
        let summary = counters.summary("/srv/registry", "http://n:5000", Duration::from_secs(2));
        let text = summary.render();
        assert!(text.contains("repositories: 2"), "{text}");
        assert!(
            text.contains("3 uploaded, 0 mounted, 0 already there"),
            "{text}"
        );
        assert!(text.contains("3.0 MiB uploaded in 2.0 s"), "{text}");
        assert!(text.contains("--include-unreferenced-blobs"), "{text}");
        assert!(
            text.contains("problems:     1\n    - blob sha256:ab (x/data): corrupt"),
            "{text}"
        );
        let line = counters.line(Duration::from_secs(1));
        assert!(line.starts_with("[2/0 repositories]"), "{line}");
        assert!(line.ends_with("1 problems"), "{line}");
    }
}
