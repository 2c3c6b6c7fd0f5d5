//! Hosts: join tokens, the registry the agents call (register, heartbeat), the host list,
//! cordoning, and the clients the manager uses to call each agent.
//!
//! A host's status is derived, not stored: `down` when its last heartbeat is older than
//! `host_down_after_ms`, else `cordoned` or `up`. So no background job has to flip it, and
//! every manager sharing a database agrees.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{Duration as ChronoDuration, Utc};
use hearth_agent_api::{pb, tls, with_bearer, AgentClient};
use hearth_store::{now_ms, to_time, HostRecord, NewHost, StoreError};
use hearth_types::api::{Event, Page};
use hearth_types::host::{CreateJoinToken, Host, HostReport, HostStatus, JoinToken, Resources};
use hearth_types::new_id;
use tonic::transport::Channel;

use super::auth::{random_secret, sha256_hex};
use super::{page, page_limit, App, Principal};
use crate::error::{ApiError, ApiResult};

const JOIN_TOKEN_PREFIX: &str = "hj_";
const MAX_JOIN_TOKEN_TTL_MIN: u32 = 7 * 24 * 60;
const AGENT_RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a registry call was refused; mapped to a gRPC status by the registry service.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Invalid(String),
    #[error("unknown host {0:?}; join again")]
    UnknownHost(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One lazily connected RPC client per host, rebuilt when the host's address or token
/// changes.
#[derive(Default)]
pub struct AgentClients {
    /// host id → (the address the client was built for, the client)
    clients: Mutex<HashMap<String, (String, HostClient)>>,
}

/// A client for one agent, carrying the token that agent expects.
#[derive(Clone)]
pub struct HostClient {
    client: AgentClient<Channel>,
    token: String,
}

impl HostClient {
    /// A request carrying the agent's token and the default deadline (a call may
    /// lengthen it with `set_timeout`).
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = with_bearer(msg, &self.token);
        req.set_timeout(AGENT_RPC_TIMEOUT);
        req
    }

    pub fn rpc(&self) -> AgentClient<Channel> {
        self.client.clone()
    }

    pub async fn host_info(&self) -> Result<HostReport, tonic::Status> {
        let resp = self
            .rpc()
            .get_host_info(self.request(pb::GetHostInfoRequest {}))
            .await?;
        Ok(HostReport::from(&resp.into_inner()))
    }
}

impl AgentClients {
    /// The client for `host`. Agents serve TLS with a certificate the cluster CA (`ca_pem`)
    /// issued for their host id, and that is the name checked, whatever the address.
    fn get(&self, host: &HostRecord, ca_pem: &str) -> ApiResult<HostClient> {
        let mut map = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((addr, client)) = map.get(&host.id) {
            if *addr == host.address && client.token == host.agent_token {
                return Ok(client.clone());
            }
        }
        let endpoint = tonic::transport::Endpoint::from_shared(host.address.clone())
            .map_err(|e| {
                ApiError::Unavailable(format!("host {} has a bad address: {e}", host.name))
            })?
            .connect_timeout(Duration::from_secs(5));
        let endpoint = if host.address.starts_with("https://") {
            endpoint
                .tls_config(tls::client_config(
                    ca_pem,
                    Some(&tls::agent_server_name(&host.id)),
                ))
                .map_err(|e| {
                    ApiError::Unavailable(format!("host {}: TLS set-up failed: {e}", host.name))
                })?
        } else {
            endpoint
        };
        let client = HostClient {
            client: AgentClient::new(endpoint.connect_lazy()),
            token: host.agent_token.clone(),
        };
        map.insert(host.id.clone(), (host.address.clone(), client.clone()));
        Ok(client)
    }
}

impl App {
    /// How long `r` has been silent, when that makes it `down`.
    pub(crate) fn silent_for_ms(&self, r: &HostRecord) -> Option<i64> {
        let silent = now_ms() - r.last_heartbeat_at_ms.unwrap_or(r.registered_at_ms);
        (r.last_heartbeat_at_ms.is_none() || silent > self.config().host_down_after_ms as i64)
            .then_some(silent)
    }

    /// The hosts that are `down`, with how long each has been silent.
    pub(crate) async fn silent_hosts(&self) -> ApiResult<HashMap<String, i64>> {
        Ok(self
            .host_records()
            .await?
            .iter()
            .filter_map(|h| Some((h.id.clone(), self.silent_for_ms(h)?)))
            .collect())
    }

    /// Every host's record, page by page.
    async fn host_records(&self) -> ApiResult<Vec<HostRecord>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let p = self.store().list_hosts(cursor.as_deref(), 1000).await?;
            out.extend(p.items);
            match p.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(out),
            }
        }
    }

    fn host_view(&self, r: HostRecord, allocated: Resources) -> Host {
        let report: HostReport = serde_json::from_value(r.info.clone()).unwrap_or_default();
        let fresh = self.silent_for_ms(&r).is_none();
        let status = match (fresh, r.cordoned) {
            (false, _) => HostStatus::Down,
            (true, true) => HostStatus::Cordoned,
            (true, false) => HostStatus::Up,
        };
        Host {
            id: r.id,
            name: r.name,
            address: r.address,
            status,
            cordoned: r.cordoned,
            agent_version: report.agent_version,
            capacity: report.capacity,
            allocated,
            accelerators: report.accelerators,
            vmms: report.vmms,
            images: report.images,
            disk: report.disk,
            networks: report.networks,
            labels: report.labels,
            registered_at: to_time(r.registered_at_ms),
            last_heartbeat_at: r.last_heartbeat_at_ms.map(to_time),
        }
    }

    pub async fn create_join_token(
        &self,
        by: &Principal,
        req: CreateJoinToken,
    ) -> ApiResult<JoinToken> {
        let ttl = req.ttl_minutes.unwrap_or(60);
        if ttl == 0 || ttl > MAX_JOIN_TOKEN_TTL_MIN {
            return Err(ApiError::bad_request(format!(
                "ttl_minutes must be 1–{MAX_JOIN_TOKEN_TTL_MIN}"
            )));
        }
        self.issue_join_token(&by.actor(), ttl).await
    }

    /// Issues a join token; `hearth up` uses this directly for its own agent.
    pub async fn issue_join_token(
        &self,
        created_by: &str,
        ttl_minutes: u32,
    ) -> ApiResult<JoinToken> {
        let token = random_secret(JOIN_TOKEN_PREFIX);
        let expires_at = Utc::now() + ChronoDuration::minutes(i64::from(ttl_minutes));
        self.store()
            .create_join_token(
                &new_id(),
                &sha256_hex(&token),
                created_by,
                expires_at.timestamp_millis(),
            )
            .await?;
        // An agent pins the manager's CA with this before it sends the token anywhere.
        let token = match self.tls_fingerprint() {
            Some(fp) => format!("{token}.{fp}"),
            None => token,
        };
        Ok(JoinToken { token, expires_at })
    }

    pub async fn list_hosts(
        &self,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> ApiResult<Page<Host>> {
        let p = self.store().list_hosts(cursor, page_limit(limit)?).await?;
        let alloc = self.allocations().await?;
        Ok(page(p, |h| {
            let a = alloc.get(&h.id).copied().unwrap_or_default();
            self.host_view(h, a)
        }))
    }

    pub async fn host(&self, id_or_name: &str) -> ApiResult<Host> {
        let h = self.store().host(id_or_name).await?;
        let a = self.allocated_on(&h.id).await?;
        Ok(self.host_view(h, a))
    }

    pub async fn set_cordoned(&self, id_or_name: &str, cordoned: bool) -> ApiResult<Host> {
        let h = self.store().host(id_or_name).await?;
        let a = self.allocated_on(&h.id).await?;
        Ok(self.host_view(self.store().set_host_cordoned(&h.id, cordoned).await?, a))
    }

    /// All hosts with what they report and have allocated, for placement.
    pub(crate) async fn hosts_for_placement(&self) -> ApiResult<Vec<Host>> {
        let alloc = self.allocations().await?;
        Ok(self
            .host_records()
            .await?
            .into_iter()
            .map(|h| {
                let a = alloc.get(&h.id).copied().unwrap_or_default();
                self.host_view(h, a)
            })
            .collect())
    }

    pub async fn remove_host(&self, id_or_name: &str) -> ApiResult<()> {
        let h = self.store().host(id_or_name).await?;
        self.store().delete_host(&h.id).await?;
        self.inner
            .agents
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&h.id);
        Ok(())
    }

    /// Asks a host's agent what it has and stores the answer (best effort: the next
    /// heartbeat carries it anyway).
    pub(crate) async fn refresh_host_info(&self, id: &str) {
        let Ok(client) = self.host_client(id).await else {
            return;
        };
        match client.host_info().await {
            Ok(report) => {
                if let Ok(info) = serde_json::to_value(&report) {
                    if let Err(e) = self.store().set_host_info(id, &info).await {
                        tracing::warn!(host = %id, error = %e, "storing a host's report");
                    }
                }
            }
            Err(e) => tracing::warn!(host = %id, error = %e, "asking a host for its report"),
        }
    }

    /// The RPC client for a host's agent.
    pub async fn host_client(&self, id_or_name: &str) -> ApiResult<HostClient> {
        let h = self.store().host(id_or_name).await?;
        self.inner.agents.get(&h, self.cluster_ca().cert_pem())
    }

    /// An agent joins, or re-joins after a restart. A known host proves itself with its
    /// host secret; a new one needs a valid join token.
    pub async fn register_host(
        &self,
        req: pb::RegisterRequest,
    ) -> Result<pb::RegisterResponse, RegistryError> {
        let info = req
            .info
            .as_ref()
            .ok_or_else(|| RegistryError::Invalid("info is required".into()))?;
        let report = HostReport::from(info);
        let address = req.address.trim();
        if !(address.starts_with("http://") || address.starts_with("https://"))
            || address.len() > 512
        {
            return Err(RegistryError::Invalid(format!(
                "address {address:?} must be an http(s) URL"
            )));
        }
        if req.agent_token.len() < 32 || req.agent_token.len() > 256 {
            return Err(RegistryError::Invalid(
                "agent_token must be 32–256 characters".into(),
            ));
        }
        if !hearth_types::is_plain_id(&req.host_id) {
            return Err(RegistryError::Invalid(
                "host_id must be 1–64 letters, digits or dashes".into(),
            ));
        }
        if req.host_secret.len() < 32 || req.host_secret.len() > 256 {
            return Err(RegistryError::Invalid(
                "host_secret must be 32–256 characters".into(),
            ));
        }
        let known = match self.store().host(&req.host_id).await {
            Ok(h) if h.id == req.host_id => {
                if h.secret_hash != sha256_hex(&req.host_secret) {
                    return Err(RegistryError::Refused(format!(
                        "host {} is registered with a different secret",
                        req.host_id
                    )));
                }
                true
            }
            Ok(_) | Err(StoreError::NotFound(_)) => false,
            Err(e) => return Err(e.into()),
        };
        if !known {
            if req.join_token.is_empty() {
                return Err(RegistryError::Refused(
                    "a join token is required (create one with `hearth host join-token`)".into(),
                ));
            }
            // A token may carry the CA's fingerprint after a dot, for the agent.
            let secret = req.join_token.split('.').next().unwrap_or_default();
            if !self.store().join_token_valid(&sha256_hex(secret)).await? {
                return Err(RegistryError::Refused(
                    "the join token is invalid or expired".into(),
                ));
            }
        }
        if !address.starts_with("https://") {
            return Err(RegistryError::Invalid(format!(
                "address {address:?} must be an https URL: agents serve TLS"
            )));
        }
        // Before anything is stored, so that a refused request leaves nothing behind.
        let cert_pem = self
            .cluster_ca()
            .sign_agent(&req.csr_pem, &req.host_id)
            .map_err(|e| RegistryError::Invalid(e.to_string()))?;
        let (host_id, host_secret) = (req.host_id.clone(), req.host_secret.clone());
        let name = if report.hostname.is_empty() {
            host_id.clone()
        } else {
            report.hostname.clone()
        };
        let info_json =
            serde_json::to_value(&report).map_err(|e| RegistryError::Invalid(e.to_string()))?;
        self.store()
            .upsert_host(NewHost {
                id: &host_id,
                name: &name,
                address,
                secret_hash: &sha256_hex(&host_secret),
                agent_token: &req.agent_token,
                info: &info_json,
            })
            .await?;
        self.record_rpc_event(
            &name,
            if known {
                "rpc Register (rejoin)"
            } else {
                "rpc Register"
            },
            &host_id,
        )
        .await;
        tracing::info!(%host_id, %name, %address, rejoin = known, "host registered");
        if report.networks.managed {
            self.ensure_default_network().await;
        }
        Ok(pb::RegisterResponse {
            host_id,
            host_secret,
            heartbeat_interval_ms: self.config().heartbeat_interval_ms,
            cert_pem,
            ca_pem: self.cluster_ca().cert_pem().to_string(),
        })
    }

    /// The host a registry call claims to come from, if its secret proves it.
    async fn authenticate_host(
        &self,
        secret: Option<&str>,
        host_id: &str,
    ) -> Result<HostRecord, RegistryError> {
        let host = match self.store().host(host_id).await {
            Ok(h) if h.id == host_id => h,
            Ok(_) | Err(StoreError::NotFound(_)) => {
                return Err(RegistryError::UnknownHost(host_id.to_string()))
            }
            Err(e) => return Err(e.into()),
        };
        if secret.map(sha256_hex).as_deref() != Some(host.secret_hash.as_str()) {
            return Err(RegistryError::Refused("wrong host secret".into()));
        }
        Ok(host)
    }

    pub async fn heartbeat(
        &self,
        secret: Option<&str>,
        req: pb::HeartbeatRequest,
    ) -> Result<pb::HeartbeatResponse, RegistryError> {
        let host = self.authenticate_host(secret, &req.host_id).await?;
        let report = req.info.as_ref().map(HostReport::from).unwrap_or_default();
        let info_json =
            serde_json::to_value(&report).map_err(|e| RegistryError::Invalid(e.to_string()))?;
        // Reconciled first, so that a host coming back is not `up` while its VMs still read
        // as they were before it went silent.
        self.reconcile_host_vms(&host.id, &req.vms).await?;
        self.store().heartbeat_host(&host.id, &info_json).await?;
        Ok(pb::HeartbeatResponse {
            heartbeat_interval_ms: self.config().heartbeat_interval_ms,
        })
    }

    pub async fn report_vm(
        &self,
        secret: Option<&str>,
        req: pb::ReportVmRequest,
    ) -> Result<(), RegistryError> {
        let host = self.authenticate_host(secret, &req.host_id).await?;
        let vm = req
            .vm
            .ok_or_else(|| RegistryError::Invalid("vm is required".into()))?;
        self.apply_vm_status(&host.id, &vm).await?;
        Ok(())
    }

    async fn record_rpc_event(&self, host_name: &str, action: &str, target: &str) {
        let event = Event {
            id: new_id(),
            at: Utc::now(),
            actor: format!("agent:{host_name}"),
            action: action.to_string(),
            target: target.to_string(),
            status: 200,
            result: "ok".into(),
            request_id: None,
        };
        if let Err(e) = self.store().append_event(&event).await {
            tracing::warn!(error = %e, "could not record an audit event");
        }
    }
}
