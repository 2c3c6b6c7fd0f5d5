//! The manager's application layer: what each API operation means, independent of HTTP.
//! Handlers call in here; this layer calls the store and, for anything on a host, the
//! agents through their RPC API. Authorization decisions that depend on data (who may see
//! whose API keys) live here too.

pub mod auth;
pub mod compile;
pub mod drain;
pub mod functions;
pub mod hosts;
pub mod images;
pub mod networks;
pub mod pki;
pub mod pool;
pub mod ratelimit;
pub mod runtimes;
pub mod schedules;
pub mod secrets;
pub mod snapshots;
pub mod templates;
pub mod throttle;
pub mod vms;
pub mod volumes;

use std::sync::Arc;

use hearth_store::Store;
use hearth_types::api::{Page, DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT};
use hearth_types::auth::Role;

use crate::config::ManagerConfig;
use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;

pub use auth::Principal;

/// Shared state of one manager process. Cheap to clone.
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    config: ManagerConfig,
    login_throttle: throttle::LoginThrottle,
    metrics: Metrics,
    agents: hosts::AgentClients,
    /// Signalled whenever a VM's observed state is recorded, for `wait`.
    vm_changed: tokio::sync::Notify,
    /// VMs being started again after their agent lost them.
    restarting: std::sync::Mutex<std::collections::HashSet<String>>,
    pools: pool::Pools,
    secrets_cipher: std::sync::OnceLock<Result<aes_gcm::Aes256Gcm, String>>,
    rate_limits: ratelimit::RateLimits,
    cluster_ca: std::sync::OnceLock<Arc<hearth_agent_api::tls::ClusterCa>>,
    /// This manager process, among those sharing the database: picked at start, it names
    /// the function VMs this process's pools own.
    manager_id: String,
}

impl App {
    pub fn new(store: Store, config: ManagerConfig) -> App {
        App {
            inner: Arc::new(Inner {
                store,
                config,
                login_throttle: throttle::LoginThrottle::default(),
                metrics: Metrics::default(),
                agents: hosts::AgentClients::default(),
                vm_changed: tokio::sync::Notify::new(),
                restarting: Default::default(),
                pools: Default::default(),
                secrets_cipher: Default::default(),
                rate_limits: Default::default(),
                cluster_ca: Default::default(),
                manager_id: hearth_types::short_suffix(),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn config(&self) -> &ManagerConfig {
        &self.inner.config
    }

    /// This manager process's id (see `Inner::manager_id`).
    pub fn manager_id(&self) -> &str {
        &self.inner.manager_id
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
}

/// Checks a list's `limit` and returns it with the default applied.
pub fn page_limit(limit: Option<u32>) -> ApiResult<u32> {
    match limit.unwrap_or(DEFAULT_PAGE_LIMIT) {
        0 => Err(ApiError::bad_request("limit must be at least 1")),
        n if n > MAX_PAGE_LIMIT => Err(ApiError::bad_request(format!(
            "limit must be at most {MAX_PAGE_LIMIT}"
        ))),
        n => Ok(n),
    }
}

pub fn page<T, U>(p: hearth_store::Paged<T>, f: impl FnMut(T) -> U) -> Page<U> {
    Page {
        items: p.items.into_iter().map(f).collect(),
        next_cursor: p.next_cursor,
    }
}

/// Fails with 403 unless `principal` has at least `role`.
pub fn require(principal: &Principal, role: Role) -> ApiResult<()> {
    if principal.role >= role {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "this needs the {role} role; you are {}",
            principal.role
        )))
    }
}
