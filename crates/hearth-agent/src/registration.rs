//! Joining the manager and heartbeating.
//!
//! Registration retries while the manager is unreachable (bounded backoff, forever, since an
//! agent is useless without one) but gives up at once when the manager refuses the token.
//! A heartbeat the manager no longer recognises (the host was removed) makes the agent join
//! again with its join token, when it has one.

use std::time::Duration;

use anyhow::{bail, Context};
use hearth_agent_api::{pb, with_bearer, RegistryClient};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::host_info::HostProbe;
use crate::identity::Identity;
use crate::vm::Vms;
use crate::AgentConfig;

pub struct Registrar {
    manager_url: String,
    channel: tonic::transport::Channel,
    join_token: Option<secrecy::SecretString>,
    advertise: String,
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
    ) -> anyhow::Result<Registrar> {
        let manager_url = config.manager_url.trim_end_matches('/').to_string();
        // One channel for the agent's life: it reconnects by itself when the manager
        // restarts.
        let channel = tonic::transport::Endpoint::from_shared(manager_url.clone())
            .with_context(|| format!("invalid manager URL {manager_url:?}"))?
            .connect_timeout(RPC_TIMEOUT)
            .timeout(RPC_TIMEOUT)
            .connect_lazy();
        Ok(Registrar {
            manager_url,
            channel,
            join_token: config.join_token.clone(),
            advertise,
            probe,
            vms,
        })
    }

    fn client(&self) -> RegistryClient<tonic::transport::Channel> {
        RegistryClient::new(self.channel.clone())
    }

    /// Joins (or re-joins) the manager, saving the identity it issues. Returns the heartbeat
    /// interval the manager asked for.
    pub async fn register(
        &self,
        identity: &mut Identity,
        cancel: &CancellationToken,
    ) -> anyhow::Result<Duration> {
        if !identity.joined && self.join_token.is_none() {
            bail!("this agent has not joined a manager yet: pass --join-token (get one with `hearth host join-token`)");
        }
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.try_register(identity).await {
                Ok(interval) => return Ok(interval),
                Err(RegisterError::Refused(msg)) => bail!("the manager refused this agent: {msg}"),
                Err(RegisterError::Unreachable(e)) => {
                    tracing::warn!(error = %e, manager = %self.manager_url, "manager unreachable; retrying");
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => bail!("cancelled while joining the manager"),
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn try_register(&self, identity: &mut Identity) -> Result<Duration, RegisterError> {
        let mut client = self.client();
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
        };
        match client.register(req).await {
            Ok(resp) => {
                let resp = resp.into_inner();
                if !identity.joined {
                    identity.joined = true;
                    identity.save().map_err(|e| {
                        RegisterError::Refused(format!("cannot save identity: {e:#}"))
                    })?;
                }
                Ok(interval(resp.heartbeat_interval_ms))
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
        loop {
            // A new image (a runtime just built) is reported at once: deploys wait on it.
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
                _ = self.probe.images_changed() => {}
            }
            match self.heartbeat(&identity).await {
                Ok(next) => every = next,
                Err(s) if matches!(s.code(), Code::Unauthenticated | Code::NotFound) => {
                    tracing::warn!(error = %s.message(), "the manager no longer knows this host; joining again");
                    match self.register(&mut identity, &cancel).await {
                        Ok(next) => every = next,
                        Err(e) => {
                            tracing::error!(error = %format!("{e:#}"), "could not join again")
                        }
                    }
                }
                Err(s) => tracing::warn!(error = %s, "heartbeat failed"),
            }
        }
    }

    async fn heartbeat(&self, identity: &Identity) -> Result<Duration, tonic::Status> {
        let mut client = self.client();
        let req = pb::HeartbeatRequest {
            host_id: identity.host_id.clone(),
            info: Some(self.probe.report().await),
            vms: self.vms.list(),
        };
        let resp = client
            .heartbeat(with_bearer(req, &identity.host_secret))
            .await?;
        Ok(interval(resp.into_inner().heartbeat_interval_ms))
    }
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
            if let Err(e) = self
                .client()
                .report_vm(with_bearer(req, &identity.host_secret))
                .await
            {
                tracing::warn!(error = %e, "could not report a VM state; the heartbeat will");
            }
        }
    }
}
