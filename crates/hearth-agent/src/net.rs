//! Managed networks on this host: a Linux bridge per network, a TAP per VM NIC, nftables
//! rules for NAT and isolation, and loopback TCP forwards into guests on these networks.
//!
//! Everything is made with `ip` and `nft` in the agent's network namespace: the host's own,
//! or one named with `--netns` (which keeps tests off the host's interfaces). A network is
//! built on a host by the first VM started on it there, and every step is idempotent, so a
//! restarted agent or a second VM just finds it made.
//!
//! What is built, per network `N` (names from the last ten hex digits of its id):
//! - `nat` and `isolated`: bridge `hbrN` with the gateway address; table `ip hearth-N`
//!   drops traffic between `hbrN` and other Hearth bridges, and for `isolated` all traffic
//!   between `hbrN` and anything else. `nat` masquerades the CIDR's egress and forwards only
//!   replies back in.
//! - `bridged`: nothing; TAPs join the host's bridge.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use hearth_agent_api::pb;
use hearth_types::network::{is_ifname, NetworkKind};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// How long one `ip` or `nft` run may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections one forward carries at once.
const MAX_FORWARD_CONNECTIONS: usize = 256;

/// A NIC on a managed network, as the manager sent it (checked).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Nic {
    pub network_id: String,
    pub kind: NetworkKind,
    pub bridge: Option<String>,
    pub network: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub ip: Ipv4Addr,
    pub mac: String,
    pub dns: Vec<Ipv4Addr>,
}

impl TryFrom<pb::Nic> for Nic {
    type Error = String;
    fn try_from(n: pb::Nic) -> Result<Nic, String> {
        if !hearth_types::is_plain_id(&n.network_id) {
            return Err(format!("bad network id {:?}", n.network_id));
        }
        let kind: NetworkKind = n.kind.parse()?;
        let (network, prefix) = n
            .cidr
            .split_once('/')
            .and_then(|(a, p)| Some((a.parse().ok()?, p.parse().ok()?)))
            .filter(|(_, p): &(Ipv4Addr, u8)| (8..=30).contains(p))
            .ok_or_else(|| format!("bad CIDR {:?}", n.cidr))?;
        let addr = |what: &str, s: &str| -> Result<Ipv4Addr, String> {
            s.parse().map_err(|_| format!("bad {what} {s:?}"))
        };
        let bridge = match kind {
            NetworkKind::Bridged => {
                if !is_ifname(&n.bridge) {
                    return Err(format!("bad bridge name {:?}", n.bridge));
                }
                Some(n.bridge)
            }
            _ => None,
        };
        if !hearth_types::network::is_mac(&n.mac) {
            return Err(format!("bad MAC {:?}", n.mac));
        }
        Ok(Nic {
            network_id: n.network_id,
            kind,
            bridge,
            network,
            prefix,
            gateway: addr("gateway", &n.gateway)?,
            ip: addr("address", &n.ip)?,
            mac: n.mac,
            dns: n
                .dns
                .iter()
                .map(|d| addr("name server", d))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// The last ten hex digits of an id: what the names of its bridge, TAP and table end in.
fn suffix(id: &str) -> String {
    let hex: String = id.chars().filter(char::is_ascii_hexdigit).collect();
    hex[hex.len().saturating_sub(10)..].to_ascii_lowercase()
}

pub fn bridge_name(network_id: &str) -> String {
    format!("hbr{}", suffix(network_id))
}

pub fn tap_name(vm_id: &str) -> String {
    format!("htap{}", suffix(vm_id))
}

fn table_name(network_id: &str) -> String {
    format!("hearth-{}", suffix(network_id))
}

/// The nftables script that (re)defines a Hearth network's table, atomically.
pub fn ruleset(nic: &Nic) -> String {
    let table = table_name(&nic.network_id);
    let br = bridge_name(&nic.network_id);
    let mut forward = vec![format!(
        r#"iifname "{br}" oifname "hbr*" oifname != "{br}" drop"#
    )];
    let mut rules = String::new();
    match nic.kind {
        NetworkKind::Isolated => {
            forward.push(format!(r#"iifname "{br}" oifname != "{br}" drop"#));
            forward.push(format!(r#"oifname "{br}" iifname != "{br}" drop"#));
        }
        NetworkKind::Nat => {
            // (`ct state != a,b` would compare the whole bit set: accept first, then drop.)
            forward.push(format!(
                r#"oifname "{br}" ct state established,related accept"#
            ));
            forward.push(format!(r#"oifname "{br}" iifname != "{br}" drop"#));
            rules = format!(
                "  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    ip saddr {}/{} oifname != \"{br}\" masquerade\n  }}\n",
                nic.network, nic.prefix
            );
        }
        NetworkKind::Bridged => {}
    }
    let forward: String = forward.iter().map(|r| format!("    {r}\n")).collect();
    format!(
        "table ip {table} {{}}\ndelete table ip {table}\ntable ip {table} {{\n  chain forward {{\n    type filter hook forward priority filter; policy accept;\n{forward}  }}\n{rules}}}\n"
    )
}

/// This host's networking: where it builds networks, and whether it may.
pub struct HostNet {
    netns: Option<String>,
    /// Why this agent may not manage networks; None when it may.
    refused: Option<String>,
    /// The host's own name servers (not on loopback), the default for guests.
    dns: Vec<Ipv4Addr>,
    /// Bridge and TAP changes run one at a time.
    lock: tokio::sync::Mutex<()>,
    /// Who owns each TAP (uid, gid): a jailed Firecracker opens its TAP as that user.
    tap_owner: Option<(u32, u32)>,
}

impl HostNet {
    /// `manage`: the operator allows it (`--manage-networks`); `netns`: build everything in
    /// this named network namespace instead of the host's own.
    pub fn new(manage: bool, netns: Option<String>) -> HostNet {
        let refused = if !manage {
            Some("the agent runs without --manage-networks".to_string())
        } else if !std::path::Path::new("/dev/net/tun").exists() {
            Some("the host has no /dev/net/tun".to_string())
        } else if !on_path("ip") || !on_path("nft") {
            Some("ip or nft is missing: install iproute2 and nftables".to_string())
        } else if netns
            .as_ref()
            .is_some_and(|n| !hearth_types::is_plain_id(n) || !netns_path(n).exists())
        {
            Some(format!("network namespace {netns:?} does not exist"))
        } else {
            None
        };
        let dns = std::fs::read_to_string("/etc/resolv.conf")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("nameserver"))
            .filter_map(|a| a.trim().parse::<Ipv4Addr>().ok())
            .filter(|a| !a.is_loopback())
            .take(3)
            .collect();
        HostNet {
            netns,
            refused,
            dns,
            lock: tokio::sync::Mutex::new(()),
            tap_owner: None,
        }
    }

    /// TAPs made from now on belong to `owner` (uid, gid).
    pub fn with_tap_owner(mut self, owner: Option<(u32, u32)>) -> HostNet {
        self.tap_owner = owner;
        self
    }

    /// Why networks are not managed here, if they are not.
    pub fn refused(&self) -> Option<&str> {
        self.refused.as_deref()
    }

    /// The namespace file QEMU must run in for its TAP.
    pub fn netns_file(&self) -> Option<PathBuf> {
        self.netns.as_deref().map(netns_path)
    }

    /// The guest's name servers: the network's, or the host's own.
    pub fn dns_for(&self, nic: &Nic) -> Vec<Ipv4Addr> {
        if nic.dns.is_empty() {
            self.dns.clone()
        } else {
            nic.dns.clone()
        }
    }

    /// Makes the VM's TAP (anew) on its network's bridge, building the network here first
    /// if needed. Returns the TAP's name.
    pub async fn attach(&self, vm_id: &str, nic: &Nic) -> Result<String, String> {
        if let Some(why) = &self.refused {
            return Err(format!("this host may not manage networks: {why}"));
        }
        let _guard = self.lock.lock().await;
        let bridge = match &nic.bridge {
            Some(b) => {
                if self.ip(&["link", "show", "dev", b]).await.is_err() {
                    return Err(format!("this host has no bridge {b:?}"));
                }
                b.clone()
            }
            None => self.ensure_bridge(nic).await?,
        };
        let tap = tap_name(vm_id);
        let _ = self.ip(&["link", "del", "dev", &tap]).await;
        let mut add = vec!["tuntap", "add", "dev", &tap, "mode", "tap"];
        let owner = self.tap_owner.map(|(u, g)| (u.to_string(), g.to_string()));
        if let Some((u, g)) = &owner {
            add.extend(["user", u, "group", g]);
        }
        self.ip(&add).await?;
        self.ip(&["link", "set", "dev", &tap, "master", &bridge, "up"])
            .await?;
        Ok(tap)
    }

    /// Removes a VM's TAP, if it has one.
    pub async fn detach(&self, vm_id: &str) {
        if self.refused.is_none() {
            let _guard = self.lock.lock().await;
            let _ = self.ip(&["link", "del", "dev", &tap_name(vm_id)]).await;
        }
    }

    /// Removes a network's bridge and table, if this host has them.
    pub async fn remove_network(&self, network_id: &str) {
        if self.refused.is_some() {
            return;
        }
        let _guard = self.lock.lock().await;
        let _ = self
            .ip(&["link", "del", "dev", &bridge_name(network_id)])
            .await;
        let table = table_name(network_id);
        let _ = self
            .nft(&format!("table ip {table} {{}}\ndelete table ip {table}\n"))
            .await;
    }

    async fn ensure_bridge(&self, nic: &Nic) -> Result<String, String> {
        let br = bridge_name(&nic.network_id);
        if self.ip(&["link", "show", "dev", &br]).await.is_err() {
            self.ip(&["link", "add", "name", &br, "type", "bridge"])
                .await?;
            let gw = format!("{}/{}", nic.gateway, nic.prefix);
            self.ip(&["addr", "add", &gw, "dev", &br]).await?;
            self.ip(&["link", "set", "dev", &br, "up"]).await?;
        }
        if nic.kind == NetworkKind::Nat {
            self.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"], None)
                .await?;
        }
        self.nft(&ruleset(nic)).await?;
        Ok(br)
    }

    async fn ip(&self, args: &[&str]) -> Result<(), String> {
        let mut all = Vec::new();
        if let Some(ns) = &self.netns {
            all.extend(["-n", ns.as_str()]);
        }
        all.extend(args);
        run("ip", &all, None).await
    }

    async fn nft(&self, script: &str) -> Result<(), String> {
        self.run("nft", &["-f", "-"], Some(script)).await
    }

    /// Runs a command in this host's network namespace.
    async fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<(), String> {
        match &self.netns {
            Some(ns) => {
                let mut all = vec!["netns", "exec", ns.as_str(), program];
                all.extend(args);
                run("ip", &all, stdin).await
            }
            None => run(program, args, stdin).await,
        }
    }

    /// Connects to a guest's address from this host's network namespace.
    pub async fn connect(&self, addr: SocketAddr) -> std::io::Result<TcpStream> {
        let Some(ns) = self.netns_file() else {
            return tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
                .await
                .map_err(|_| std::io::ErrorKind::TimedOut)?;
        };
        // A socket belongs to the namespace of the thread that made it: make it on a thread
        // of its own (never a pooled one) that enters the namespace and then ends.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let res = (|| {
                let f = std::fs::File::open(&ns)?;
                nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)?;
                let s = std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
                s.set_nonblocking(true)?;
                Ok::<_, std::io::Error>(s)
            })();
            let _ = tx.send(res);
        });
        let s = rx.await.map_err(|_| std::io::ErrorKind::Interrupted)??;
        TcpStream::from_std(s)
    }

    /// Forwards TCP connections to `127.0.0.1:host_port` to `target` (a guest's address),
    /// until the returned forward is dropped.
    pub async fn forward(
        self: &Arc<Self>,
        host_port: u16,
        target: SocketAddr,
    ) -> Result<Forward, String> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, host_port))
            .await
            .map_err(|e| format!("forwarding host port {host_port}: {e}"))?;
        let net = self.clone();
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_FORWARD_CONNECTIONS));
        let mut conns = JoinSet::new();
        Ok(Forward(tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    continue; // full: the connection is closed
                };
                while conns.try_join_next().is_some() {}
                let net = net.clone();
                // In the set, so that ending the forward ends its connections too.
                conns.spawn(async move {
                    let _permit = permit;
                    if let Ok(mut outbound) = net.connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        })))
    }
}

/// A running TCP forward; dropping it closes its port and its connections.
pub struct Forward(tokio::task::JoinHandle<()>);

impl Drop for Forward {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn netns_path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| std::path::Path::new(d).join(program).is_file())
}

/// Runs a command to its end (bounded), with `stdin` fed in; its stderr is the error.
async fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<(), String> {
    let what = format!("{program} {}", args.join(" "));
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .await
            .map_err(|e| format!("{what}: {e}"))?;
    }
    let out = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| format!("{what}: no answer in {} s", COMMAND_TIMEOUT.as_secs()))?
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(kind: NetworkKind) -> Nic {
        Nic {
            network_id: "0190f3e2-7c1a-7b2e-9f00-a1b2c3d4e5f6".into(),
            kind,
            bridge: None,
            network: Ipv4Addr::new(10, 88, 0, 0),
            prefix: 16,
            gateway: Ipv4Addr::new(10, 88, 0, 1),
            ip: Ipv4Addr::new(10, 88, 0, 2),
            mac: "02:00:00:00:00:01".into(),
            dns: vec![],
        }
    }

    #[test]
    fn names_fit_in_an_interface_name() {
        let id = "0190f3e2-7c1a-7b2e-9f00-a1b2c3d4e5f6";
        assert_eq!(bridge_name(id), "hbrb2c3d4e5f6");
        assert_eq!(tap_name(id), "htapb2c3d4e5f6");
        assert!(is_ifname(&tap_name(id)));
        assert!(!is_ifname("a-name-that-is-too-long"));
        assert!(!is_ifname("br0;rm"));
    }

    #[test]
    fn nat_masquerades_its_cidr_and_only_lets_replies_in() {
        let r = ruleset(&nic(NetworkKind::Nat));
        assert!(r.contains("ip saddr 10.88.0.0/16 oifname != \"hbrb2c3d4e5f6\" masquerade"));
        assert!(r.contains(r#"oifname "hbrb2c3d4e5f6" ct state established,related accept"#));
        let accept = r.find("established,related accept").unwrap();
        let drop = r
            .find(r#"oifname "hbrb2c3d4e5f6" iifname != "hbrb2c3d4e5f6" drop"#)
            .unwrap();
        assert!(accept < drop, "{r}");
        assert!(r.contains(r#"oifname "hbr*""#), "{r}");
        // Re-applying replaces the table instead of adding a second copy of its rules.
        assert!(r.starts_with("table ip hearth-b2c3d4e5f6 {}\ndelete table ip hearth-b2c3d4e5f6\n"));
    }

    #[test]
    fn isolated_has_no_way_out_and_no_nat() {
        let r = ruleset(&nic(NetworkKind::Isolated));
        assert!(!r.contains("masquerade"));
        assert!(r.contains(r#"iifname "hbrb2c3d4e5f6" oifname != "hbrb2c3d4e5f6" drop"#));
        assert!(r.contains(r#"oifname "hbrb2c3d4e5f6" iifname != "hbrb2c3d4e5f6" drop"#));
    }

    #[test]
    fn a_nic_from_the_manager_is_checked() {
        let good = pb::Nic {
            network_id: "n1".into(),
            kind: "nat".into(),
            bridge: String::new(),
            cidr: "10.88.0.0/16".into(),
            gateway: "10.88.0.1".into(),
            ip: "10.88.0.2".into(),
            mac: "02:00:00:00:00:01".into(),
            dns: vec!["192.0.2.53".into()],
        };
        assert!(Nic::try_from(good.clone()).is_ok());
        for bad in [
            pb::Nic {
                cidr: "10.88.0.0".into(),
                ..good.clone()
            },
            pb::Nic {
                mac: "01:00:00:00:00:01".into(),
                ..good.clone()
            },
            pb::Nic {
                kind: "bridged".into(),
                bridge: "br0 up".into(),
                ..good.clone()
            },
            pb::Nic {
                ip: "10.88.0.300".into(),
                ..good.clone()
            },
        ] {
            assert!(Nic::try_from(bad).is_err());
        }
    }
}
