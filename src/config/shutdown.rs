//! How a node stops on SIGTERM: how long it keeps serving while load
//! balancers turn away, and how long uploads in progress may take to end.

use std::time::Duration;

use clap::Args;

use super::file::FileConfig;

#[derive(Debug, Default, Args)]
pub struct ShutdownArgs {
    /// Seconds a stopping node keeps serving, with /readyz answering 503,
    /// before it closes its listener: load balancers that check /readyz
    /// stop sending it requests meanwhile, so none is refused. It serves on
    /// past this while upload sessions are in use, up to
    /// --shutdown-timeout. [default: 2]
    #[arg(long, env = "BERTH_SHUTDOWN_DELAY", value_name = "SECONDS")]
    pub shutdown_delay: Option<u64>,

    /// Most seconds a stopping node waits for uploads in progress and
    /// requests in flight before it exits anyway. Keep it below the
    /// orchestrator's grace period (Kubernetes' terminationGracePeriodSeconds,
    /// Swarm's stop_grace_period). [default: 30]
    #[arg(long, env = "BERTH_SHUTDOWN_TIMEOUT", value_name = "SECONDS")]
    pub shutdown_timeout: Option<u64>,
}

/// The resolved [`ShutdownArgs`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shutdown {
    pub delay: Duration,
    pub timeout: Duration,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            delay: Duration::from_secs(2),
            timeout: Duration::from_secs(30),
        }
    }
}

impl ShutdownArgs {
    pub(super) fn resolve(self, file: &FileConfig) -> Shutdown {
        let default = Shutdown::default();
        let secs = |flag: Option<u64>, key: Option<u64>, default: Duration| {
            flag.or(key).map(Duration::from_secs).unwrap_or(default)
        };
        let timeout = secs(
            self.shutdown_timeout,
            file.shutdown_timeout,
            default.timeout,
        );
        Shutdown {
            delay: secs(self.shutdown_delay, file.shutdown_delay, default.delay).min(timeout),
            timeout,
        }
    }
}
