//! Managed networks: their records, the address book (which address each VM holds on
//! each), and the `default` NAT network, made when the first agent that may manage networks
//! reports in.
//!
//! A network touches no host when it is made: a host builds its bridge when a VM on it
//! first starts there. Deleting one (refused while VMs are on it) asks every host that
//! manages networks to take its bridge and rules down.

use std::net::Ipv4Addr;

use hearth_agent_api::pb;
use hearth_store::{now_ms, to_time, NetworkRecord, StoreError, VmRecord};
use hearth_types::host::{Host, HostStatus};
use hearth_types::network::{is_ifname, is_mac, random_mac, CreateNetwork, Network, NetworkKind};
use hearth_types::new_id;
use hearth_types::vm::{check_name, PortForward, Protocol};
use ipnet::Ipv4Net;

use super::App;
use crate::error::{ApiError, ApiResult};

/// The network VMs join when they name none, once it exists.
pub(crate) const DEFAULT_NETWORK: &str = "default";
const DEFAULT_CIDR: &str = "10.88.0.0/16";
/// The names `network` takes that are not managed networks.
const RESERVED: [&str; 3] = ["none", "user", "managed"];
const MAX_DNS: usize = 3;

fn view(r: NetworkRecord, vm_count: u64) -> Network {
    Network {
        kind: r.kind.parse().unwrap_or(NetworkKind::Isolated),
        id: r.id,
        name: r.name,
        cidr: r.cidr,
        gateway: r.gateway,
        bridge: r.bridge,
        dns: serde_json::from_str(&r.dns).unwrap_or_default(),
        vm_count,
        created_at: to_time(r.created_at_ms),
    }
}

fn parse_cidr(s: &str) -> ApiResult<Ipv4Net> {
    let net: Ipv4Net = s.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "cidr must be an IPv4 network like 10.89.0.0/24, got {s:?}"
        ))
    })?;
    if !(8..=29).contains(&net.prefix_len()) {
        return Err(ApiError::bad_request(format!(
            "cidr's prefix must be /8–/29, got /{}",
            net.prefix_len()
        )));
    }
    if net.addr() != net.network() {
        return Err(ApiError::bad_request(format!(
            "cidr {s} has host bits set; did you mean {}?",
            net.trunc()
        )));
    }
    let a = net.network();
    if a.is_loopback() || a.is_multicast() || a.is_link_local() || a.is_unspecified() {
        return Err(ApiError::bad_request(format!(
            "cidr {s} is not a network VMs can use"
        )));
    }
    Ok(net)
}

fn parse_ip(what: &str, s: &str) -> ApiResult<Ipv4Addr> {
    s.parse()
        .map_err(|_| ApiError::bad_request(format!("{what} must be an IPv4 address, got {s:?}")))
}

/// A new VM's place on the network it asked for, as its record keeps it.
pub(crate) struct Attachment {
    /// `none`, `user` or the managed network's name.
    pub network: String,
    pub network_id: Option<String>,
    pub mac: Option<String>,
    pub note: Option<String>,
}

impl Attachment {
    pub(crate) fn plain(network: &str) -> Attachment {
        Attachment {
            network: network.into(),
            network_id: None,
            mac: None,
            note: None,
        }
    }
}

impl App {
    pub async fn create_network(&self, req: CreateNetwork) -> ApiResult<Network> {
        check_name("network", &req.name).map_err(ApiError::BadRequest)?;
        if RESERVED.contains(&req.name.as_str()) {
            return Err(ApiError::bad_request(format!(
                "{:?} is reserved; pick another network name",
                req.name
            )));
        }
        let net = parse_cidr(&req.cidr)?;
        let gateway = match &req.gateway {
            Some(g) => {
                let g = parse_ip("gateway", g)?;
                if !net.contains(&g) || g == net.network() || g == net.broadcast() {
                    return Err(ApiError::bad_request(format!(
                        "gateway {g} is not a host address of {net}"
                    )));
                }
                g
            }
            None => net.hosts().next().expect("a /29 or larger has hosts"),
        };
        let bridge =
            match (req.kind, req.bridge) {
                (NetworkKind::Bridged, Some(b)) if is_ifname(&b) => Some(b),
                (NetworkKind::Bridged, Some(b)) => {
                    return Err(ApiError::bad_request(format!(
                        "bridge must be an interface name (1–15 letters, digits, - _ .), got {b:?}"
                    )))
                }
                (NetworkKind::Bridged, None) => return Err(ApiError::bad_request(
                    "a bridged network needs \"bridge\": the host bridge its VMs join, e.g. br0",
                )),
                (_, Some(_)) => {
                    return Err(ApiError::bad_request(
                        "\"bridge\" is for bridged networks; nat and isolated ones get their own",
                    ))
                }
                (_, None) => None,
            };
        if req.dns.len() > MAX_DNS {
            return Err(ApiError::bad_request(format!(
                "at most {MAX_DNS} name servers"
            )));
        }
        for d in &req.dns {
            parse_ip("each dns entry", d)?;
        }
        for other in self.store().networks().await? {
            if let Ok(o) = other.cidr.parse::<Ipv4Net>() {
                if o.contains(&net.network()) || net.contains(&o.network()) {
                    return Err(ApiError::Conflict(format!(
                        "cidr {net} overlaps network {} ({o}); pick a range of its own",
                        other.name
                    )));
                }
            }
        }
        let r = NetworkRecord {
            id: new_id(),
            name: req.name,
            kind: req.kind.as_str().into(),
            cidr: net.to_string(),
            gateway: gateway.to_string(),
            bridge,
            dns: serde_json::to_string(&req.dns).unwrap_or_else(|_| "[]".into()),
            created_at_ms: now_ms(),
        };
        self.store().insert_network(&r).await?;
        Ok(view(r, 0))
    }

    pub async fn network(&self, id_or_name: &str) -> ApiResult<Network> {
        let r = self.store().network(id_or_name).await?;
        let n = self.store().addresses_in_use(&r.id).await?.len() as u64;
        Ok(view(r, n))
    }

    pub async fn list_networks(&self) -> ApiResult<Vec<Network>> {
        let mut out = Vec::new();
        for r in self.store().networks().await? {
            let n = self.store().addresses_in_use(&r.id).await?.len() as u64;
            out.push(view(r, n));
        }
        Ok(out)
    }

    /// Deletes a network no VM is on, and its bridge on every host that can be reached.
    pub async fn delete_network(&self, id_or_name: &str) -> ApiResult<()> {
        let r = self.store().network(id_or_name).await?;
        if !self.store().delete_network(&r.id).await? {
            let n = self.store().addresses_in_use(&r.id).await?.len();
            return Err(ApiError::Conflict(format!(
                "network {} has {n} VM(s) on it; delete them first",
                r.name
            )));
        }
        for h in self.hosts_for_placement().await? {
            if h.status == HostStatus::Down || !h.networks.managed {
                continue;
            }
            let res = async {
                let agent = self.host_client(&h.id).await?;
                agent
                    .rpc()
                    .delete_network(agent.request(pb::NetworkRef { id: r.id.clone() }))
                    .await?;
                Ok::<_, ApiError>(())
            }
            .await;
            if let Err(e) = res {
                tracing::warn!(network = %r.name, host = %h.name, error = %e, "could not take the network down there");
            }
        }
        Ok(())
    }

    /// Makes the `default` NAT network if there is none (called when a host that may
    /// manage networks reports in). Its CIDR taken by another network leaves it unmade.
    pub(crate) async fn ensure_default_network(&self) {
        if self.store().network(DEFAULT_NETWORK).await.is_ok() {
            return;
        }
        let made = self
            .create_network(CreateNetwork {
                name: DEFAULT_NETWORK.into(),
                kind: NetworkKind::Nat,
                cidr: DEFAULT_CIDR.into(),
                gateway: None,
                bridge: None,
                dns: vec![],
            })
            .await;
        match made {
            Ok(_) => tracing::info!(cidr = DEFAULT_CIDR, "made the default NAT network"),
            Err(ApiError::Conflict(_)) => {} // made meanwhile, or its range is taken
            Err(e) => tracing::warn!(error = %e, "could not make the default network"),
        }
    }

    /// Where a new VM on `host` goes for the network it asked for (`None`: the default),
    /// checking its MAC and ports. A managed network on a host that may not manage networks
    /// becomes user-mode networking, with a note saying so.
    pub(crate) async fn attachment(
        &self,
        asked: Option<&str>,
        mac: Option<&str>,
        ports: &[PortForward],
        host: &Host,
    ) -> ApiResult<Attachment> {
        let name = match asked {
            Some(n) => n,
            None if self.store().network(DEFAULT_NETWORK).await.is_ok() => DEFAULT_NETWORK,
            None => "none",
        };
        let plain = matches!(name, "none" | "user");
        if mac.is_some() && plain {
            return Err(ApiError::bad_request("mac needs a managed network"));
        }
        if plain {
            return Ok(Attachment::plain(name));
        }
        let net = match self.store().network(name).await {
            Ok(n) => n,
            Err(StoreError::NotFound(_)) => {
                return Err(ApiError::NotFound(format!(
                    "no network {name:?}: list them with `hearth network list`, or use none or user"
                )))
            }
            Err(e) => return Err(e.into()),
        };
        if !host.networks.managed {
            let why = host.networks.note.as_deref().unwrap_or("no reason given");
            return Ok(Attachment {
                note: Some(format!(
                    "host {} may not manage networks ({why}): QEMU user-mode networking instead of network {}",
                    host.name, net.name
                )),
                ..Attachment::plain("user")
            });
        }
        if ports.iter().any(|p| p.protocol != Protocol::Tcp) {
            return Err(ApiError::bad_request(
                "on a managed network, port forwards are TCP only",
            ));
        }
        let mac = match mac {
            Some(m) if is_mac(m) => m.to_ascii_lowercase(),
            Some(m) => {
                return Err(ApiError::bad_request(format!(
                    "mac must be a unicast MAC address like 02:00:00:00:00:01, got {m:?}"
                )))
            }
            None => random_mac(),
        };
        Ok(Attachment {
            network: net.name,
            network_id: Some(net.id),
            mac: Some(mac),
            note: None,
        })
    }

    /// The lowest address of `network_id` no VM holds (nor the gateway).
    pub(crate) async fn free_address(&self, network_id: &str) -> ApiResult<Ipv4Addr> {
        let net = self.store().network(network_id).await?;
        let cidr: Ipv4Net = net.cidr.parse().map_err(|_| {
            ApiError::Internal(anyhow::anyhow!("network {} has a bad cidr", net.name))
        })?;
        let used: std::collections::HashSet<String> = self
            .store()
            .addresses_in_use(network_id)
            .await?
            .into_iter()
            .collect();
        cidr.hosts()
            .find(|a| a.to_string() != net.gateway && !used.contains(&a.to_string()))
            .ok_or_else(|| {
                ApiError::Conflict(format!(
                    "network {} has no free address ({cidr} is full)",
                    net.name
                ))
            })
    }

    /// Inserts a new VM's record, giving it the lowest free address on its managed network;
    /// another VM taking that address first makes it try the next.
    pub(crate) async fn insert_vm_with_address(&self, record: &mut VmRecord) -> ApiResult<()> {
        let Some(network_id) = record.network_id.clone() else {
            return Ok(self.store().insert_vm(record).await?);
        };
        for _ in 0..5 {
            record.ip = Some(self.free_address(&network_id).await?.to_string());
            match self.store().insert_vm(record).await {
                Err(StoreError::Conflict(m)) if m.starts_with("address") => continue,
                other => return Ok(other?),
            }
        }
        Err(ApiError::Unavailable(
            "addresses on this network are being taken quickly; retry".into(),
        ))
    }

    /// The NIC an agent builds for a VM on a managed network.
    pub(crate) async fn nic(&self, v: &VmRecord) -> ApiResult<Option<pb::Nic>> {
        let (Some(network_id), Some(ip), Some(mac)) = (&v.network_id, &v.ip, &v.mac) else {
            return Ok(None);
        };
        let net = self.store().network(network_id).await?;
        let cidr: Ipv4Net = net.cidr.parse().map_err(|_| {
            ApiError::Internal(anyhow::anyhow!("network {} has a bad cidr", net.name))
        })?;
        Ok(Some(pb::Nic {
            network_id: net.id,
            kind: net.kind,
            bridge: net.bridge.unwrap_or_default(),
            cidr: cidr.to_string(),
            gateway: net.gateway,
            ip: ip.clone(),
            mac: mac.clone(),
            dns: serde_json::from_str(&net.dns).unwrap_or_default(),
        }))
    }
}
