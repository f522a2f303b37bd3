use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use berth::cluster::status::{render, StatusReport};
use berth::config::{Cli, ClusterCommand, Command, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log.as_deref(), cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Cluster(cmd) => cluster(cmd).await,
            Command::Access(cmd) => berth::access_cli::run(cmd).await,
            Command::Health {
                node,
                tls,
                ready,
                or_joining,
            } => health(node, tls.files(), ready, or_joining).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Box<berth::config::ServeArgs>) -> Result<(), Box<dyn std::error::Error>> {
    let config = args.resolve()?;
    let server = berth::server::start(&config).await?;
    shutdown_signal().await;
    tracing::info!("shutdown signal received; draining in-flight requests");
    server.shutdown().await;
    Ok(())
}

async fn cluster(cmd: ClusterCommand) -> Result<(), Box<dyn std::error::Error>> {
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    match cmd {
        ClusterCommand::Status { node, json } => {
            let url = format!("{}/_berth/cluster/status", node.trim_end_matches('/'));
            let resp = http.get(&url).send().await?.error_for_status()?;
            let report: StatusReport = resp.json().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", render(&report));
            }
        }
        ClusterCommand::Remove {
            node_id,
            node,
            cluster_secret_file,
        } => {
            let url = format!(
                "{}/_berth/cluster/members/{node_id}",
                node.trim_end_matches('/')
            );
            let mut req = http.delete(&url);
            if let Some(path) = cluster_secret_file {
                let secret = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                req = req.header(berth::api::admin::SECRET_HEADER, secret.trim());
            }
            let resp = req.send().await?;
            if !resp.status().is_success() {
                let status = resp.status();
                return Err(format!("{status}: {}", resp.text().await.unwrap_or_default()).into());
            }
            println!("node {node_id} removed");
        }
    }
    Ok(())
}

async fn health(
    node: Option<String>,
    tls: Option<berth::tls::TlsFiles>,
    ready: bool,
    or_joining: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let path = match (ready, or_joining) {
        (false, _) => "healthz",
        (true, false) => "readyz",
        (true, true) => "readyz?joining",
    };
    let mut client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(5));
    let default_node = match &tls {
        Some(files) => {
            let stop = tokio_util::sync::CancellationToken::new();
            client = client.use_preconfigured_tls(berth::tls::node_tls(files, stop)?.client);
            "https://127.0.0.1:5000"
        }
        None => "http://127.0.0.1:5000",
    };
    let node = node.unwrap_or_else(|| default_node.to_owned());
    let url = format!("{}/{path}", node.trim_end_matches('/'));
    let resp = client.build()?.get(&url).send().await?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(format!("{url}: {status}: {}", text.trim()).into());
    }
    print!("{text}");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn init_logging(filter: Option<&str>, format: LogFormat) {
    let filter = match filter {
        Some(f) => EnvFilter::new(f),
        // openraft narrates every election and retry at info.
        None => EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new("info,openraft=warn")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
