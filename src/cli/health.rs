//! `berth health`: a container health check that needs no curl in the
//! image. It asks a probe, not the admin API, so it trusts the server's own
//! certificate rather than a CA.

use clap::Args;

use super::client::url;
use super::CliResult;
use crate::config::TlsArgs;

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The node to ask (its client API URL). [default: https://127.0.0.1:5000
    /// with --tls-cert, else http://127.0.0.1:5000]
    #[arg(long, env = "BERTH_NODE")]
    pub node: Option<String>,
    /// An HTTPS node is trusted when it serves exactly this certificate
    /// (its name need not match the address); inside berth's container
    /// the server's own setting applies.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Ask whether the node is ready to serve, not only alive.
    #[arg(long)]
    pub ready: bool,
    /// With --ready, also pass while the node is not a member yet (still
    /// joining), and fail only a member that is behind. For Swarm, which
    /// lists a task in DNS, where its peers find it, only once it passes.
    #[arg(long, requires = "ready")]
    pub or_joining: bool,
}

pub async fn run(args: HealthArgs) -> CliResult<()> {
    let path = match (args.ready, args.or_joining) {
        (false, _) => "/healthz",
        (true, false) => "/readyz",
        (true, true) => "/readyz?joining",
    };
    let mut client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(5));
    let tls = args.tls.files();
    let default_node = match &tls {
        Some(files) => {
            let stop = tokio_util::sync::CancellationToken::new();
            client = client.use_preconfigured_tls(crate::tls::node_tls(files, stop)?.client);
            "https://127.0.0.1:5000"
        }
        None => "http://127.0.0.1:5000",
    };
    let node = args.node.unwrap_or_else(|| default_node.to_owned());
    let url = url(&node, path);
    let resp = client.build()?.get(&url).send().await?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(format!("{url}: {status}: {}", text.trim()).into());
    }
    print!("{text}");
    Ok(())
}
