//! The long-running commands: `up`, `manager`, `agent`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use hearth_manager::config::{ManagerConfig, Overrides};
use hearth_manager::Application;

#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// Address to listen on [default: 127.0.0.1:18080]
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Where Hearth keeps its state [default: ~/.local/share/hearth]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// `sqlite://PATH` or `postgres://USER:PASS@HOST/DB` [default: SQLite in the data dir]
    #[arg(long)]
    pub database_url: Option<String>,
    /// A hearth.toml to read [default: ./hearth.toml when present]
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Serve HTTPS with a certificate from the cluster CA [default: true for `manager`,
    /// false for `up`]
    #[arg(long, value_name = "BOOL")]
    pub tls: Option<bool>,
    /// Another name (DNS name or IP address) for the manager's certificate; repeat it
    #[arg(long = "tls-name", value_name = "NAME")]
    pub tls_names: Vec<String>,
}

/// An agent's managed networks.
#[derive(clap::Args, Debug, Clone)]
pub struct NetArgs {
    /// Let the agent build bridges, TAP devices and NAT rules for managed networks (this
    /// changes the host's networking; without it VMs get QEMU user-mode networking)
    #[arg(long, env = "HEARTH_MANAGE_NETWORKS")]
    pub manage_networks: bool,
    /// Build networks and run networked VMs inside this network namespace (made with
    /// `ip netns add NAME`) instead of the host's own
    #[arg(long, env = "HEARTH_NETNS")]
    pub netns: Option<String>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct AgentArgs {
    /// The manager's URL, e.g. http://10.0.0.1:18080; several, comma-separated, when
    /// managers share one database (the agent moves on when one cannot be reached)
    #[arg(long, env = "HEARTH_MANAGER_URL")]
    pub manager: String,
    /// A join token from `hearth host join-token` (needed for the first join only)
    #[arg(long, env = "HEARTH_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// Where the agent keeps its identity, images and VMs
    #[arg(long, env = "HEARTH_AGENT_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Where images are built and cached [default: DATA_DIR/images]; agents may share one
    #[arg(long, env = "HEARTH_IMAGES_DIR")]
    pub images_dir: Option<PathBuf>,
    /// Address of the agent's RPC API
    #[arg(long, env = "HEARTH_AGENT_LISTEN", default_value = "127.0.0.1:18081")]
    pub listen: SocketAddr,
    /// The URL the manager should use to reach this agent [default: https://LISTEN]; the
    /// agent serves TLS with a certificate the manager issues it
    #[arg(long, env = "HEARTH_AGENT_ADVERTISE")]
    pub advertise: Option<String>,
    /// The cluster CA (PEM) of a manager that serves TLS [default: pinned by the join
    /// token's fingerprint at the first join, and kept in the data dir]
    #[arg(long, env = "HEARTH_MANAGER_CA")]
    pub manager_ca: Option<PathBuf>,
    /// How long a guest may take to boot before its VM is marked failed, in seconds
    #[arg(long, env = "HEARTH_BOOT_TIMEOUT_S", default_value_t = 90)]
    pub boot_timeout_s: u64,
    /// auto: use KVM once a probe guest boots under it, TCG otherwise; kvm; tcg
    #[arg(long, env = "HEARTH_ACCEL", default_value = "auto")]
    pub accel: hearth_agent::accel::AccelMode,
    /// A label for this host, KEY=VALUE (repeat it); VMs created with a matching
    /// --host-label are placed only on hosts that have it
    #[arg(long = "label", env = "HEARTH_AGENT_LABELS", value_delimiter = ',', value_parser = hearth_types::host::parse_label)]
    pub labels: Vec<(String, String)>,
    #[command(flatten)]
    pub net: NetArgs,
}

/// The boot bound for `hearth up`'s own agent.
fn up_boot_timeout() -> std::time::Duration {
    std::env::var("HEARTH_BOOT_TIMEOUT_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(std::time::Duration::from_secs)
        .unwrap_or(hearth_agent::AgentConfig::DEFAULT_BOOT_TIMEOUT)
}

pub fn init_logging() {
    use tracing_subscriber::{fmt, EnvFilter};
    let filter = EnvFilter::try_from_env("HEARTH_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("HEARTH_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The configuration, with TLS on unless it says otherwise when `tls_by_default`.
fn manager_config(args: &ServerArgs, tls_by_default: bool) -> anyhow::Result<ManagerConfig> {
    let mut config = ManagerConfig::load(
        args.config.as_deref(),
        &Overrides {
            listen: args.listen,
            data_dir: args.data_dir.clone(),
            database_url: args.database_url.clone(),
            tls: args.tls,
            tls_names: args.tls_names.clone(),
        },
    )?;
    config.tls = Some(config.tls.unwrap_or(tls_by_default));
    Ok(config)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

fn banner(app: &Application, with_agent: bool) {
    let url = app.url();
    eprintln!();
    eprintln!("  Hearth is running at {url}  (API docs: {url}/docs)");
    match &app.admin_password_hint {
        Some(p) if p.starts_with("HEARTH_") => {
            eprintln!("  Created user admin with the password from {p}.")
        }
        Some(p) => eprintln!("  Created user admin; its password is in {p}"),
        None => eprintln!("  Log in with an existing user."),
    }
    if with_agent {
        eprintln!("  A local agent serves this host.");
    }
    let ca = if url.starts_with("https") {
        format!(" --ca-cert {}", app.ca_file().display())
    } else {
        String::new()
    };
    eprintln!("  Next: hearth login --url {url}{ca}");
    eprintln!();
}

pub async fn manager(args: ServerArgs) -> anyhow::Result<()> {
    let app = Application::build(manager_config(&args, true)?).await?;
    banner(&app, false);
    app.run_until(shutdown_signal()).await
}

pub async fn up(args: ServerArgs, net: NetArgs) -> anyhow::Result<()> {
    let config = manager_config(&args, false)?;
    let agent_dir = config.data_dir.join("agent");
    let app = Application::build(config).await?;
    let ca_file = app.ca_file();
    let scheme = if app.url().starts_with("https") {
        "https"
    } else {
        "http"
    };
    let mut manager_addr = app.addr();
    if manager_addr.ip().is_unspecified() {
        manager_addr.set_ip([127, 0, 0, 1].into());
    }
    let token = app
        .app()
        .issue_join_token("hearth up", 10)
        .await
        .map_err(|e| anyhow::anyhow!("issuing the local agent's join token: {e}"))?;
    banner(&app, true);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stop_rx.await;
    }));
    let agent = hearth_agent::start(hearth_agent::AgentConfig {
        manager_url: format!("{scheme}://{manager_addr}"),
        join_token: Some(token.token.into()),
        data_dir: agent_dir,
        images_dir: std::env::var_os("HEARTH_IMAGES_DIR").map(PathBuf::from),
        listen: "127.0.0.1:0".parse().expect("valid address"),
        advertise: None,
        manager_ca: Some(ca_file),
        boot_timeout: up_boot_timeout(),
        accel: std::env::var("HEARTH_ACCEL")
            .ok()
            .map(|v| v.parse())
            .transpose()
            .map_err(|e: String| anyhow::anyhow!("HEARTH_ACCEL: {e}"))?
            .unwrap_or_default(),
        manage_networks: net.manage_networks,
        netns: net.netns,
        labels: Default::default(),
    })
    .await
    .context("starting the local agent")?;
    shutdown_signal().await;
    agent.shutdown().await;
    let _ = stop_tx.send(());
    server.await.context("manager task")?
}

pub async fn agent(args: AgentArgs) -> anyhow::Result<()> {
    let mut agent = hearth_agent::start(hearth_agent::AgentConfig {
        manager_url: args.manager,
        join_token: args.join_token.map(Into::into),
        data_dir: args.data_dir,
        images_dir: args.images_dir,
        listen: args.listen,
        advertise: args.advertise,
        manager_ca: args.manager_ca,
        boot_timeout: std::time::Duration::from_secs(args.boot_timeout_s.clamp(1, 3600)),
        accel: args.accel,
        manage_networks: args.net.manage_networks,
        netns: args.net.netns,
        labels: args.labels.into_iter().collect(),
    })
    .await?;
    eprintln!("agent {} listening on {}", agent.host_id, agent.addr);
    tokio::select! {
        _ = shutdown_signal() => {
            let running = agent.detach().await;
            if running > 0 {
                eprintln!(
                    "agent stopped; its {running} VM(s) keep running, and the next `hearth agent` \
                     on this data dir takes them over"
                );
            }
        }
        _ = agent.wait() => anyhow::bail!("the agent stopped unexpectedly"),
    }
    Ok(())
}
