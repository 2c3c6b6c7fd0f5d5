//! The Hearth host agent.
//!
//! One agent runs per host. It joins a manager with a join token, keeps its host identity in
//! its data dir (so a restart is the same host), heartbeats what the host has, and serves the
//! `Agent` RPC service the manager calls. It is the only component that touches VMMs.
//!
//! Start-up order matters: the RPC listener is bound first, so the address the agent
//! registers is one that already answers.

pub mod accel;
pub mod host_info;
pub mod identity;
pub mod image;
pub mod manager_ca;
pub mod net;
mod registration;
pub mod runtimes;
mod service;
pub mod vm;
pub mod vmms;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use hearth_agent_api::AgentServer;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use identity::Identity;
use image::Images;

/// How an agent is started. Built from `hearth agent` flags, or by `hearth up`.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The manager's base URL, e.g. `http://127.0.0.1:18080`; several, comma-separated, for
    /// managers that share one database.
    pub manager_url: String,
    /// Needed for the first join; a restarted agent uses the identity in its data dir.
    pub join_token: Option<SecretString>,
    pub data_dir: PathBuf,
    /// Where images (the default initramfs, runtime root filesystems) are built and cached;
    /// `<data_dir>/images` when unset. Agents may share one.
    pub images_dir: Option<PathBuf>,
    /// Where the RPC API listens. Port 0 picks a free one.
    pub listen: SocketAddr,
    /// The URL the manager should use to reach this agent; defaults to `https://<listen>`.
    /// The agent always serves TLS, with a certificate the manager issues it at joining.
    pub advertise: Option<String>,
    /// The CA a manager serving TLS chains to; without it, the join token's fingerprint
    /// pins the CA fetched from the manager (see [`manager_ca`]).
    pub manager_ca: Option<PathBuf>,
    /// How long a guest may take from launch to its agent answering.
    pub boot_timeout: std::time::Duration,
    pub accel: accel::AccelMode,
    /// May build bridges, TAPs and NAT rules for managed networks (it changes the host's
    /// networking, so the operator opts in).
    pub manage_networks: bool,
    /// Build networks and run networked VMs in this named network namespace instead of the
    /// host's own (`ip netns add NAME` made it).
    pub netns: Option<String>,
    /// The operator's labels for this host, for placement (checked with
    /// [`hearth_types::host::check_labels`]).
    pub labels: std::collections::BTreeMap<String, String>,
}

impl AgentConfig {
    /// Each manager's base URL, without a trailing slash.
    pub fn manager_urls(&self) -> Vec<String> {
        self.manager_url
            .split(',')
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .collect()
    }

    /// The default boot bound: generous, since TCG on a busy 2-core host is slow.
    pub const DEFAULT_BOOT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(90);
}

/// A running agent. Dropping it does not stop it: call [`RunningAgent::shutdown`].
pub struct RunningAgent {
    pub addr: SocketAddr,
    pub host_id: String,
    cancel: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
    vms: vm::Vms,
}

impl RunningAgent {
    /// Stops serving and kills this agent's VMs. (An agent that dies without this, even by
    /// `kill -9`, leaves them running, and its next start takes them over.)
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
        self.vms.shutdown_all().await;
    }

    /// Stops serving and leaves the VMs running, for the next start of an agent on this
    /// data dir to take over (an upgrade, a restart). Returns how many run.
    pub async fn detach(mut self) -> usize {
        self.cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
        self.vms.list().iter().filter(|s| s.pid != 0).count()
    }

    /// Resolves when the agent stops (on shutdown, or when a task ends on its own).
    pub async fn wait(&mut self) {
        self.tasks.join_next().await;
        self.cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Binds the RPC listener, joins the manager (retrying while it is unreachable) and starts
/// serving and heartbeating.
pub async fn start(config: AgentConfig) -> anyhow::Result<RunningAgent> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the agent API on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let advertise = config
        .advertise
        .clone()
        .unwrap_or_else(|| format!("https://{addr}"));
    anyhow::ensure!(
        advertise.starts_with("https://"),
        "--advertise {advertise:?} must be an https URL: the agent serves TLS"
    );
    let manager_ca = manager_ca::trust(&config).await?;

    let mut identity = Identity::load_or_new(&config.data_dir)?;
    let images = Images::default();
    let images_dir = config
        .images_dir
        .clone()
        .unwrap_or_else(|| config.data_dir.join("images"));
    let dir = images_dir.clone();
    let default = match tokio::task::spawn_blocking(move || image::build_default(&dir)).await? {
        Ok(img) => {
            images.insert("default", img.clone());
            Some(img)
        }
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "no default image: VMs cannot start here until this is fixed");
            None
        }
    };
    let vmlinux_cache = images_dir.join("vmlinux");
    let runtimes = runtimes::Runtimes::new(images_dir, images.clone(), default.clone());
    let imported_dir = config.data_dir.join("imported-images");
    image::imported::load_all(&imported_dir, &images);
    let accel = accel::AccelState::start(&config.data_dir, default, config.accel);
    let run_root = config.data_dir.join("run").join("vms");
    let (reports_tx, reports_rx) = tokio::sync::mpsc::channel(256);
    let vmms = vmms::Vmms::new(accel.clone(), vmlinux_cache);
    let net = Arc::new(
        net::HostNet::new(config.manage_networks, config.netns.clone())
            .with_tap_owner(vmms.jail_ids()),
    );
    if let Some(why) = net.refused() {
        tracing::info!(
            "managed networks are off here ({why}); VMs asking for one get user-mode networking"
        );
    }
    let vms = vm::Vms::new(vm::VmHost {
        vmms,
        net: net.clone(),
        accel: accel.clone(),
        images: images.clone(),
        run_root,
        files: vm::files::Roots::new(&config.data_dir),
        boot_timeout: config.boot_timeout,
        reports: reports_tx,
    });
    // Before joining, so that the first heartbeat reports the VMs that still run.
    vms.take_over_leftovers().await;
    hearth_types::host::check_labels(&config.labels).map_err(anyhow::Error::msg)?;
    let info = host_info::HostProbe::new(
        &config.data_dir,
        accel,
        images.clone(),
        net,
        config.labels.clone().into_iter().collect(),
    );
    let cancel = CancellationToken::new();
    let key = hearth_agent_api::tls::AgentKey::generate()?;
    let registrar = Arc::new(registration::Registrar::new(
        &config,
        advertise,
        info.clone(),
        vms.clone(),
        key.csr_pem(&identity.host_id)?,
        manager_ca.as_deref(),
    )?);
    let joined = registrar.register(&mut identity, &cancel).await?;
    let interval = joined.interval;
    let server_tls = tonic::transport::ServerTlsConfig::new().identity(
        tonic::transport::Identity::from_pem(&joined.cert_pem, key.key_pem()),
    );
    let host_id = identity.host_id.clone();
    tracing::info!(%host_id, %addr, "agent joined the manager");

    let mut tasks = tokio::task::JoinSet::new();
    let service = service::AgentService::new(
        Arc::new(identity.clone()),
        info,
        vms.clone(),
        runtimes,
        images.clone(),
        imported_dir,
    );
    let mut server = tonic::transport::Server::builder()
        .tls_config(server_tls)
        .context("the agent's TLS set-up")?;
    let serve_cancel = cancel.clone();
    tasks.spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let res = server
            .add_service(AgentServer::new(service))
            .serve_with_incoming_shutdown(incoming, serve_cancel.cancelled())
            .await;
        if let Err(e) = res {
            tracing::error!(error = %e, "agent API server stopped");
        }
    });
    let (rep, rep_id, rep_cancel) = (registrar.clone(), identity.clone(), cancel.clone());
    tasks.spawn(async move { rep.report_loop(rep_id, reports_rx, rep_cancel).await });
    let hb_cancel = cancel.clone();
    tasks.spawn(async move {
        registrar
            .heartbeat_loop(identity, interval, hb_cancel)
            .await
    });
    Ok(RunningAgent {
        addr,
        host_id,
        cancel,
        tasks,
        vms,
    })
}
