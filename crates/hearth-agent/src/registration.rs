//! Joining the manager and heartbeating.
//!
//! Registration retries while the manager is unreachable (bounded backoff, forever, since an
//! agent is useless without one) but gives up at once when the manager refuses the token.
//! A heartbeat the manager no longer recognises (the host was removed) makes the agent join
//! again with its join token, when it has one.
//!
//! An agent may know several managers (they share one database, so any of them will do):
//! it talks to one, and moves on to the next when that one cannot be reached.

use std::time::Duration;

use anyhow::{bail, Context};
use hearth_agent_api::{pb, tls, with_bearer, RegistryClient};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::host_info::HostProbe;
use crate::identity::Identity;
use crate::vm::Vms;
use crate::AgentConfig;

pub struct Registrar {
    /// Each manager's URL and channel.
    managers: Vec<(String, tonic::transport::Channel)>,
    /// The one in use.
    current: std::sync::atomic::AtomicUsize,
    join_token: Option<secrecy::SecretString>,
    advertise: String,
    /// A request for a certificate for the agent's TLS key, sent with every registration.
    csr_pem: String,
    probe: HostProbe,
    vms: Vms,
}

const MAX_BACKOFF: Duration = Duration::from_secs(5);
const RPC_TIMEOUT: Duration = Duration::from_secs(10);

impl Registrar {
    pub fn new(
        config: &AgentConfig,
        advertise: String,
        probe: HostProbe,
        vms: Vms,
        csr_pem: String,
        manager_ca: Option<&str>,
    ) -> anyhow::Result<Registrar> {
        // One channel per manager for the agent's life: each reconnects by itself when its
        // manager restarts.
        let mut managers = Vec::new();
        for url in config.manager_urls() {
            let mut endpoint = tonic::transport::Endpoint::from_shared(url.clone())
                .with_context(|| format!("invalid manager URL {url:?}"))?
                .connect_timeout(RPC_TIMEOUT)
                .timeout(RPC_TIMEOUT);
            if let (true, Some(ca)) = (url.starts_with("https://"), manager_ca) {
                endpoint = endpoint
                    .tls_config(tls::client_config(ca, None))
                    .with_context(|| format!("TLS for {url}"))?;
            }
            let channel = endpoint.connect_lazy();
            managers.push((url, channel));
        }
        Ok(Registrar {
            managers,
            current: Default::default(),
            join_token: config.join_token.clone(),
            advertise,
            csr_pem,
            probe,
            vms,
        })
    }

    /// Calls the manager in use; when it cannot be reached, the others in turn (staying
    /// with the first that answers).
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, tonic::Status>
    where
        F: Fn(RegistryClient<tonic::transport::Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        use std::sync::atomic::Ordering;
        let first = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..self.managers.len() {
            let k = (first + i) % self.managers.len();
            let (url, channel) = &self.managers[k];
            match f(RegistryClient::new(channel.clone())).await {
                Ok(resp) => {
                    if k != first {
                        self.current.store(k, Ordering::Relaxed);
                        tracing::info!(manager = %url, "now talking to this manager");
                    }
                    return Ok(resp.into_inner());
                }
                Err(s) if matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded) => {
                    last = Some(s)
                }
                Err(s) => return Err(s),
            }
        }
        Err(last.unwrap_or_else(|| tonic::Status::unavailable("no manager URL")))
    }

    fn manager_urls(&self) -> String {
        self.managers
            .iter()
            .map(|(u, _)| u.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Joins (or re-joins) the manager, saving the identity it issues.
    pub async fn register(
        &self,
        identity: &mut Identity,
        cancel: &CancellationToken,
    ) -> anyhow::Result<Joined> {
        if !identity.joined && self.join_token.is_none() {
            bail!("this agent has not joined a manager yet: pass --join-token (get one with `hearth host join-token`)");
        }
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.try_register(identity).await {
                Ok(joined) => return Ok(joined),
                Err(RegisterError::Refused(msg)) => bail!("the manager refused this agent: {msg}"),
                Err(RegisterError::Unreachable(e)) => {
                    tracing::warn!(error = %e, managers = %self.manager_urls(), "no manager reachable; retrying");
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => bail!("cancelled while joining the manager"),
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn try_register(&self, identity: &mut Identity) -> Result<Joined, RegisterError> {
        let req = pb::RegisterRequest {
            join_token: self
                .join_token
                .as_ref()
                .map(|t| t.expose_secret().to_string())
                .unwrap_or_default(),
            host_id: identity.host_id.clone(),
            host_secret: identity.host_secret.clone(),
            address: self.advertise.clone(),
            agent_token: identity.agent_token.clone(),
            info: Some(self.probe.report().await),
            csr_pem: self.csr_pem.clone(),
        };
        match self
            .call(|mut c| {
                let req = req.clone();
                async move { c.register(req).await }
            })
            .await
        {
            Ok(resp) => {
                if !identity.joined {
                    identity.joined = true;
                    identity.save().map_err(|e| {
                        RegisterError::Refused(format!("cannot save identity: {e:#}"))
                    })?;
                }
                Ok(Joined {
                    interval: interval(resp.heartbeat_interval_ms),
                    cert_pem: resp.cert_pem,
                })
            }
            Err(s)
                if matches!(
                    s.code(),
                    Code::Unauthenticated | Code::PermissionDenied | Code::InvalidArgument
                ) =>
            {
                Err(RegisterError::Refused(s.message().to_string()))
            }
            Err(s) => Err(RegisterError::Unreachable(s.to_string())),
        }
    }

    pub async fn heartbeat_loop(
        &self,
        mut identity: Identity,
        mut every: Duration,
        cancel: CancellationToken,
    ) {
        // The first heartbeat goes at once: it tells the manager which VMs still run here.
        let mut wait = Duration::ZERO;
        loop {
            // A new image (a runtime just built) is reported at once: deploys wait on it.
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = self.probe.images_changed() => {}
            }
            match self.heartbeat(&identity).await {
                Ok(next) => every = next,
                Err(s) if matches!(s.code(), Code::Unauthenticated | Code::NotFound) => {
                    tracing::warn!(error = %s.message(), "the manager no longer knows this host; joining again");
                    // The certificate served is still good: same key, same name, same CA.
                    match self.register(&mut identity, &cancel).await {
                        Ok(joined) => every = joined.interval,
                        Err(e) => {
                            tracing::error!(error = %format!("{e:#}"), "could not join again")
                        }
                    }
                }
                Err(s) => tracing::warn!(error = %s, "heartbeat failed"),
            }
            wait = every;
        }
    }

    async fn heartbeat(&self, identity: &Identity) -> Result<Duration, tonic::Status> {
        let req = pb::HeartbeatRequest {
            host_id: identity.host_id.clone(),
            info: Some(self.probe.report().await),
            vms: self.vms.list(),
        };
        let resp = self
            .call(|mut c| {
                let req = with_bearer(req.clone(), &identity.host_secret);
                async move { c.heartbeat(req).await }
            })
            .await?;
        Ok(interval(resp.heartbeat_interval_ms))
    }
}

/// What a registration gives.
pub struct Joined {
    /// How often the manager wants heartbeats.
    pub interval: Duration,
    /// The certificate (PEM) the agent serves its API with.
    pub cert_pem: String,
}

enum RegisterError {
    Unreachable(String),
    Refused(String),
}

fn interval(ms: u32) -> Duration {
    Duration::from_millis(u64::from(ms.clamp(100, 60_000)))
}

impl Registrar {
    /// Pushes each VM state change to the manager as it happens. A report that cannot be
    /// delivered is dropped: the next heartbeat carries every VM's state anyway.
    pub async fn report_loop(
        &self,
        identity: Identity,
        mut reports: tokio::sync::mpsc::Receiver<pb::VmStatus>,
        cancel: CancellationToken,
    ) {
        loop {
            let vm = tokio::select! {
                _ = cancel.cancelled() => return,
                r = reports.recv() => match r { Some(vm) => vm, None => return },
            };
            let req = pb::ReportVmRequest {
                host_id: identity.host_id.clone(),
                vm: Some(vm),
            };
            let sent = self
                .call(|mut c| {
                    let req = with_bearer(req.clone(), &identity.host_secret);
                    async move { c.report_vm(req).await }
                })
                .await;
            if let Err(e) = sent {
                tracing::warn!(error = %e, "could not report a VM state; the heartbeat will");
            }
        }
    }
}
