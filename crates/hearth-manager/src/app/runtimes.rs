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

/// `rt`'s image on each host, as the hosts last reported.
fn reported(rt: &Runtime, hosts: &[Host]) -> Vec<RuntimeHost> {
    let image = runtime::image_name(rt);
    hosts
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
        .collect()
}

/// `rt` with its image's state on each host (`on_hosts`, in the order of `hosts`), and
/// whether functions can use it: an image runtime needs its image ready on a host that is
/// up, a compiled one its compiler on the manager; native code needs only the default image
/// every host builds at start.
fn info(rt: &Runtime, on_hosts: Vec<RuntimeHost>, hosts: &[Host]) -> RuntimeInfo {
    let image_ready = rt.kind != RuntimeKind::Image
        || on_hosts
            .iter()
            .zip(hosts)
            .any(|(r, h)| r.state == "ready" && h.status == HostStatus::Up);
    let reason = if !image_ready {
        Some(format!(
            "its image is not built on any ready host yet: run `hearth runtime build {}` \
             (POST /v1/runtimes/{}/build)",
            rt.name, rt.name
        ))
    } else if rt.compiled {
        super::compile::toolchain(rt.name).err()
    } else {
        None
    };
    RuntimeInfo {
        name: rt.name.into(),
        description: rt.description.into(),
        handler: rt.handler_help.into(),
        image: runtime::image_name(rt),
        builds_image: rt.kind == RuntimeKind::Image,
        available: reason.is_none(),
        reason,
        hosts: on_hosts,
    }
}

impl App {
    /// Every runtime, as the hosts last reported.
    pub async fn runtimes(&self) -> ApiResult<Vec<RuntimeInfo>> {
        let hosts = self.hosts_for_placement().await?;
        Ok(RUNTIMES
            .iter()
            .map(|rt| info(rt, reported(rt, &hosts), &hosts))
            .collect())
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
        let mut on_hosts = reported(rt, &hosts);
        if rt.kind != RuntimeKind::Image {
            if start {
                return Err(ApiError::bad_request(format!(
                    "the {name} runtime needs no image; deploy functions with it directly"
                )));
            }
            return Ok(info(rt, on_hosts, &hosts));
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
                    if let Some(entry) = on_hosts.iter_mut().find(|e| e.host_id == host_id) {
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
        Ok(info(rt, on_hosts, &hosts))
    }
}
