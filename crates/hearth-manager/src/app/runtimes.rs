//! Function runtimes across the cluster: which hosts have each runtime's image, and building
//! it. The catalog itself is [`hearth_types::runtime`]; the images are built by each host's
//! agent, which reports them with its heartbeat and answers for a build's progress.

use hearth_agent_api::pb;
use hearth_types::function::{RuntimeHost, RuntimeInfo};
use hearth_types::host::{Host, HostStatus};
use hearth_types::runtime::{self, Runtime, RuntimeKind, RUNTIMES};

use super::App;
use crate::error::{ApiError, ApiResult};

fn unknown(name: &str) -> ApiError {
    ApiError::NotFound(format!(
        "no runtime {name:?}; the runtimes are: {}",
        runtime::names()
    ))
}

/// What the hosts' reports say of `rt`, without asking the agents.
fn reported(rt: &Runtime, hosts: &[Host]) -> RuntimeInfo {
    let image = runtime::image_name(rt);
    let on_hosts: Vec<RuntimeHost> = hosts
        .iter()
        .map(|h| {
            let img = h.images.iter().find(|i| i.name == image);
            RuntimeHost {
                host_id: h.id.clone(),
                host: h.name.clone(),
                state: if img.is_some() { "ready" } else { "absent" }.into(),
                message: None,
                error: None,
                size_bytes: img.map_or(0, |i| i.size_bytes),
                elapsed_ms: 0,
            }
        })
        .collect();
    // Native and compiled code need only the default image every host builds at start; a
    // compiled runtime needs its compiler on the manager.
    let (ready, reason) = match rt.kind {
        RuntimeKind::Native => (true, None),
        RuntimeKind::Compiled => match super::compile::toolchain(rt.name) {
            Ok(()) => (true, None),
            Err(why) => (false, Some(why)),
        },
        RuntimeKind::Image => {
            let ready = on_hosts
                .iter()
                .zip(hosts)
                .any(|(r, h)| r.state == "ready" && h.status == HostStatus::Up);
            let why = format!(
                "its image is not built on any ready host yet: run `hearth runtime build {}` \
                 (POST /v1/runtimes/{}/build)",
                rt.name, rt.name
            );
            match (ready, rt.compiled) {
                (false, _) => (false, Some(why)),
                (true, true) => match super::compile::toolchain(rt.name) {
                    Ok(()) => (true, None),
                    Err(why) => (false, Some(why)),
                },
                (true, false) => (true, None),
            }
        }
    };
    RuntimeInfo {
        name: rt.name.into(),
        description: rt.description.into(),
        handler: rt.handler_help.into(),
        image,
        available: ready,
        reason,
        hosts: on_hosts,
    }
}

impl App {
    /// Every runtime, as the hosts last reported.
    pub async fn runtimes(&self) -> ApiResult<Vec<RuntimeInfo>> {
        let hosts = self.hosts_for_placement().await?;
        Ok(RUNTIMES.iter().map(|rt| reported(rt, &hosts)).collect())
    }

    /// One runtime, with each ready host asked for its image's state (a build's progress).
    pub async fn runtime(&self, name: &str) -> ApiResult<RuntimeInfo> {
        self.runtime_on_hosts(name, false).await
    }

    /// Starts building the runtime's image on every ready host that lacks it.
    pub async fn build_runtime(&self, name: &str) -> ApiResult<RuntimeInfo> {
        self.runtime_on_hosts(name, true).await
    }

    async fn runtime_on_hosts(&self, name: &str, start: bool) -> ApiResult<RuntimeInfo> {
        let rt = runtime::find(name).ok_or_else(|| unknown(name))?;
        let hosts = self.hosts_for_placement().await?;
        let mut info = reported(rt, &hosts);
        if rt.kind != RuntimeKind::Image {
            if start {
                return Err(ApiError::bad_request(format!(
                    "the {name} runtime needs no image; deploy functions with it directly"
                )));
            }
            return Ok(info);
        }
        let ready: Vec<&Host> = hosts
            .iter()
            .filter(|h| h.status == HostStatus::Up)
            .collect();
        if start && ready.is_empty() {
            return Err(ApiError::Conflict(
                "no host is ready to build on; check `hearth host list`".into(),
            ));
        }
        let asks = ready.iter().map(|h| async move {
            let agent = self.host_client(&h.id).await?;
            let st = agent
                .rpc()
                .build_runtime(agent.request(pb::BuildRuntimeRequest {
                    name: name.into(),
                    start,
                }))
                .await?
                .into_inner();
            Ok::<_, ApiError>((h.id.clone(), st))
        });
        for res in futures_util::future::join_all(asks).await {
            match res {
                Ok((host_id, st)) => {
                    if let Some(entry) = info.hosts.iter_mut().find(|e| e.host_id == host_id) {
                        entry.state = st.state;
                        entry.message = (!st.message.is_empty()).then_some(st.message);
                        entry.error = (!st.error.is_empty()).then_some(st.error);
                        entry.size_bytes = st.size_bytes;
                        entry.elapsed_ms = st.elapsed_ms;
                    }
                }
                Err(e) => {
                    tracing::warn!(runtime = name, error = %e, "a host did not answer for a runtime")
                }
            }
        }
        if info
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("not built"))
            && info.hosts.iter().any(|h| h.state == "ready")
        {
            info.available = true;
            info.reason = None;
        }
        Ok(info)
    }
}
