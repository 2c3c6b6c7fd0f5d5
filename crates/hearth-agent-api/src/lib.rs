//! The RPC contract between the manager and the host agents: the generated gRPC code for
//! `proto/agent.proto`, and conversions between its messages and `hearth-types`.
//!
//! The proto file is the contract; read it first. Conversions live here so neither side
//! hand-maps fields.

pub mod tls;

pub mod pb {
    tonic::include_proto!("hearth.agent.v1");
}

pub use pb::agent_client::AgentClient;
pub use pb::agent_server::{Agent, AgentServer};
pub use pb::registry_client::RegistryClient;
pub use pb::registry_server::{Registry, RegistryServer};

use hearth_types::host::{Accelerator, Resources, VmmInfo};

/// The metadata key that carries a bearer credential on every call.
pub const AUTHORIZATION: &str = "authorization";

/// Adds `authorization: Bearer <token>` to a request.
pub fn with_bearer<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Ok(v) = format!("Bearer {token}").parse() {
        req.metadata_mut().insert(AUTHORIZATION, v);
    }
    req
}

/// The bearer credential of a request, if it carries one.
pub fn bearer<T>(req: &tonic::Request<T>) -> Option<&str> {
    req.metadata()
        .get(AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

impl From<&pb::Resources> for Resources {
    fn from(r: &pb::Resources) -> Self {
        Resources {
            vcpus: r.vcpus,
            memory_mib: r.memory_mib,
            disk_mib: r.disk_mib,
        }
    }
}

impl From<Resources> for pb::Resources {
    fn from(r: Resources) -> Self {
        pb::Resources {
            vcpus: r.vcpus,
            memory_mib: r.memory_mib,
            disk_mib: r.disk_mib,
        }
    }
}

impl From<&pb::Accelerator> for Accelerator {
    fn from(a: &pb::Accelerator) -> Self {
        Accelerator {
            name: a.name.clone(),
            usable: a.usable,
            reason: non_empty(&a.reason),
        }
    }
}

impl From<Accelerator> for pb::Accelerator {
    fn from(a: Accelerator) -> Self {
        pb::Accelerator {
            name: a.name,
            usable: a.usable,
            reason: a.reason.unwrap_or_default(),
        }
    }
}

impl From<&pb::Vmm> for VmmInfo {
    fn from(v: &pb::Vmm) -> Self {
        VmmInfo {
            name: v.name.clone(),
            usable: v.usable,
            version: non_empty(&v.version),
            path: non_empty(&v.path),
            reason: non_empty(&v.reason),
        }
    }
}

impl From<VmmInfo> for pb::Vmm {
    fn from(v: VmmInfo) -> Self {
        pb::Vmm {
            name: v.name,
            usable: v.usable,
            version: v.version.unwrap_or_default(),
            path: v.path.unwrap_or_default(),
            reason: v.reason.unwrap_or_default(),
        }
    }
}

impl From<&pb::HostInfo> for hearth_types::host::HostReport {
    fn from(h: &pb::HostInfo) -> Self {
        hearth_types::host::HostReport {
            hostname: h.hostname.clone(),
            agent_version: h.agent_version.clone(),
            capacity: h.capacity.as_ref().map(Into::into).unwrap_or_default(),
            accelerators: h.accelerators.iter().map(Into::into).collect(),
            vmms: h.vmms.iter().map(Into::into).collect(),
            images: h
                .images
                .iter()
                .map(|i| hearth_types::host::HostImage {
                    name: i.name.clone(),
                    kind: i.kind.clone(),
                    kernel_version: i.kernel_version.clone(),
                    size_bytes: i.size_bytes,
                })
                .collect(),
            disk: h.disk.as_ref().map(|d| hearth_types::host::HostDisk {
                vm_disks_bytes: d.vm_disks_bytes,
                snapshots_bytes: d.snapshots_bytes,
                free_bytes: d.free_bytes,
                total_bytes: d.total_bytes,
            }),
            networks: hearth_types::host::HostNetworks {
                managed: h.manages_networks,
                note: (!h.networks_note.is_empty()).then(|| h.networks_note.clone()),
            },
            labels: h
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_round_trips() {
        let req = with_bearer((), "abc");
        assert_eq!(bearer(&req), Some("abc"));
        assert_eq!(bearer(&tonic::Request::new(())), None);
    }

    #[test]
    fn vmm_info_round_trips_with_empty_strings_as_none() {
        let v = VmmInfo {
            name: "qemu".into(),
            usable: false,
            version: None,
            path: Some("/usr/bin/qemu-system-x86_64".into()),
            reason: Some("binary missing".into()),
        };
        let back = VmmInfo::from(&pb::Vmm::from(v.clone()));
        assert_eq!(back, v);
    }
}
