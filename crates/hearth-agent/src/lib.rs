//! The Hearth host agent.
//!
//! One agent runs per host. It joins a manager with a join token, keeps its host identity in
//! its data dir (so a restart is the same host), heartbeats what the host has, and serves the
//! `Agent` RPC service the manager calls. It is the only component that touches VMMs.
//!
//! Start-up order matters: the RPC listener is bound first, so the address the agent
//! registers is one that already answers.

pub mod host_info;
pub mod identity;
pub mod image;
mod registration;
mod service;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use hearth_agent_api::AgentServer;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use identity::Identity;

/// How an agent is started. Built from `hearth agent` flags, or by `hearth up`.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The manager's base URL, e.g. `http://127.0.0.1:18080`.
    pub manager_url: String,
    /// Needed for the first join; a restarted agent uses the identity in its data dir.
    pub join_token: Option<SecretString>,
    pub data_dir: PathBuf,
    /// Where the RPC API listens. Port 0 picks a free one.
    pub listen: SocketAddr,
    /// The URL the manager should use to reach this agent; defaults to `http://<listen>`.
    pub advertise: Option<String>,
}

/// A running agent. Dropping it does not stop it: call [`RunningAgent::shutdown`].
pub struct RunningAgent {
    pub addr: SocketAddr,
    pub host_id: String,
    cancel: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
}

impl RunningAgent {
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
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
        .unwrap_or_else(|| format!("http://{addr}"));

    let mut identity = Identity::load_or_new(&config.data_dir)?;
    let info = host_info::HostProbe::new(&config.data_dir);
    let cancel = CancellationToken::new();
    let registrar = registration::Registrar::new(&config, advertise, info.clone())?;
    let interval = registrar.register(&mut identity, &cancel).await?;
    let host_id = identity.host_id.clone();
    tracing::info!(%host_id, %addr, "agent joined the manager");

    let mut tasks = tokio::task::JoinSet::new();
    let service = service::AgentService::new(Arc::new(identity.clone()), info);
    let serve_cancel = cancel.clone();
    tasks.spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let res = tonic::transport::Server::builder()
            .add_service(AgentServer::new(service))
            .serve_with_incoming_shutdown(incoming, serve_cancel.cancelled())
            .await;
        if let Err(e) = res {
            tracing::error!(error = %e, "agent API server stopped");
        }
    });
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
    })
}
