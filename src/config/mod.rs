//! Configuration of `berth serve`: command-line flags, `BERTH_*`
//! environment variables and a YAML file, merged into one resolved struct.
//! Flags win over the environment, which wins over the file, which wins over
//! defaults. The command-line parser itself lives in [`crate::cli`].
//!
//! `serve` holds the node's options and their resolution, `file` the YAML
//! keys, `http` the client-connection limits, `shutdown` how a node stops, `mirror` the upstream
//! registries mirrored (a file-only list).

mod file;
mod http;
mod mirror;
mod notify;
mod serve;
mod shutdown;

use std::path::PathBuf;

use clap::Args;

use crate::tls::TlsFiles;
pub use http::HttpArgs;
pub use mirror::MirrorConfig;
pub use serve::{ConfigError, ServeArgs, ServeConfig, TokenConfig};
pub use shutdown::{Shutdown, ShutdownArgs};

/// A node's HTTPS certificate: `serve` serves it, `health` trusts it.
#[derive(Debug, Default, Args)]
pub struct TlsArgs {
    /// The node's PEM certificate chain (with --tls-key): `serve` serves HTTPS
    /// with it and reads the files again when they change, so a renewed
    /// certificate needs no restart.
    #[arg(
        long,
        env = "BERTH_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(
        long,
        env = "BERTH_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The two files, when both are given.
    pub fn files(self) -> Option<TlsFiles> {
        self.tls_cert
            .zip(self.tls_key)
            .map(|(cert, key)| TlsFiles { cert, key })
    }
}
