//! The Hearth manager: the REST API, authentication, the database, and the registry the host
//! agents join. It reaches hosts only through the agents' RPC API, even when an agent runs in
//! the same process (`hearth up`).
//!
//! [`Application::build`] opens the database, applies migrations, creates the first admin and
//! binds the listener, returning the bound address, so `main` and the tests start the manager
//! the same way.

pub mod app;
pub mod config;
pub mod error;
pub mod http;
pub mod metrics;
mod registry;
mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

pub use app::App;
pub use config::ManagerConfig;

pub struct Application {
    listener: TcpListener,
    app: App,
    /// Where the first admin's password is, when this start created the admin.
    pub admin_password_hint: Option<String>,
    /// Set when the manager serves HTTPS.
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
}

impl Application {
    pub async fn build(config: ManagerConfig) -> anyhow::Result<Application> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
        let url = config.database_url();
        let store = hearth_store::Store::connect(&url)
            .await
            .with_context(|| format!("opening database {}", hearth_store::redact_url(&url)))?;
        let listener = TcpListener::bind(config.listen).await.with_context(|| {
            format!(
                "binding {} (is another manager running? use --listen)",
                config.listen
            )
        })?;
        let app = App::new(store, config);
        let admin_password_hint = app.bootstrap_admin().await?;
        app.load_cluster_ca().await?;
        let tls = if app.config().serves_tls() {
            Some(tls::server_config(&app, listener.local_addr()?)?)
        } else {
            None
        };
        let built = Application {
            listener,
            app,
            admin_password_hint,
            tls,
        };
        let ca_file = built.ca_file();
        std::fs::write(&ca_file, built.app.cluster_ca().cert_pem())
            .with_context(|| format!("writing {}", ca_file.display()))?;
        Ok(built)
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr())
    }

    /// The file holding the cluster CA's certificate, which clients of a manager serving
    /// TLS trust (`hearth login --ca-cert`).
    pub fn ca_file(&self) -> std::path::PathBuf {
        self.app.config().data_dir.join("ca.pem")
    }

    pub fn app(&self) -> &App {
        &self.app
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let janitor = tokio::spawn(janitor(self.app.clone()));
        let pools = tokio::spawn(pool_upkeep(self.app.clone()));
        let router = http::router(self.app.clone());
        let res = match self.tls {
            None => axum::serve(self.listener, router)
                .with_graceful_shutdown(shutdown)
                .await
                .map_err(anyhow::Error::from),
            Some(config) => tls::serve(self.listener, config, router, shutdown).await,
        };
        janitor.abort();
        pools.abort();
        self.app.store().close().await;
        res.context("serving HTTP")
    }
}

/// Functions' background work, every second: pool TTLs and pre-warming, due schedules and
/// queued invocations. At start, invocations a previous run left running end as errors.
async fn pool_upkeep(app: App) {
    match app
        .store()
        .abandon_running_invocations(
            r#"{"message":"the manager stopped while this invocation ran","stack":null}"#,
        )
        .await
    {
        Ok(n) if n > 0 => tracing::warn!(n, "invocations left running by a previous run"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "abandoning invocations"),
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n = 0u64;
    loop {
        tick.tick().await;
        app.maintain_pools(n).await;
        app.run_due().await;
        n += 1;
    }
}

/// Periodic housekeeping: expired sessions.
async fn janitor(app: App) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    loop {
        tick.tick().await;
        match app.store().purge_expired_sessions().await {
            Ok(n) if n > 0 => tracing::debug!(n, "purged expired sessions"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "purging sessions"),
        }
    }
}
