//! Managed networks as the API shows them: a bridge per host that VMs join through TAP
//! devices, with addresses handed out from the network's CIDR.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How a network reaches beyond its VMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkKind {
    /// A bridge of Hearth's with the gateway address on it; the host masquerades egress.
    Nat,
    /// A bridge of Hearth's with no way out: VMs reach each other and the host only.
    Isolated,
    /// TAPs on a bridge the host already has (its LAN); Hearth adds no rules.
    Bridged,
}

impl NetworkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkKind::Nat => "nat",
            NetworkKind::Isolated => "isolated",
            NetworkKind::Bridged => "bridged",
        }
    }
}

impl std::str::FromStr for NetworkKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "nat" => Ok(NetworkKind::Nat),
            "isolated" => Ok(NetworkKind::Isolated),
            "bridged" => Ok(NetworkKind::Bridged),
            _ => Err(format!(
                "network kind must be nat, isolated or bridged, got {s:?}"
            )),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub kind: NetworkKind,
    /// The IPv4 network VMs take their addresses from, e.g. `10.88.0.0/16`.
    pub cidr: String,
    /// The guests' default route: the bridge's own address for `nat` and `isolated`.
    pub gateway: String,
    /// `bridged`: the host's bridge the TAPs join.
    pub bridge: Option<String>,
    /// Name servers the guests are given.
    pub dns: Vec<String>,
    /// VMs with an address on it.
    pub vm_count: u64,
    pub created_at: DateTime<Utc>,
}

/// `POST /v1/networks`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNetwork {
    /// 1–63 lowercase letters, digits and dashes.
    pub name: String,
    pub kind: NetworkKind,
    /// An IPv4 network with a /8–/29 prefix and no host bits set, e.g. `10.89.0.0/24`; it
    /// may not overlap another network's.
    pub cidr: String,
    /// Default: the CIDR's first address.
    #[serde(default)]
    pub gateway: Option<String>,
    /// `bridged` only, and required there: the host bridge to join, e.g. `br0`.
    #[serde(default)]
    pub bridge: Option<String>,
    /// Name servers for the guests (at most 3). Default: the host's own, when they are not
    /// on loopback.
    #[serde(default)]
    pub dns: Vec<String>,
}

/// Whether `s` can name a host's network interface (1–15 letters, digits, `-`, `_`, `.`).
pub fn is_ifname(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Whether `s` is a unicast MAC address written `aa:bb:cc:dd:ee:ff` (hex, either case), and
/// not all zeros.
pub fn is_mac(s: &str) -> bool {
    let octets: Vec<&str> = s.split(':').collect();
    let Ok(bytes) = octets
        .iter()
        .map(|o| {
            if o.len() == 2 {
                u8::from_str_radix(o, 16).map_err(|_| ())
            } else {
                Err(())
            }
        })
        .collect::<Result<Vec<u8>, ()>>()
    else {
        return false;
    };
    bytes.len() == 6 && bytes[0] & 1 == 0 && bytes.iter().any(|b| *b != 0)
}

/// A random locally administered unicast MAC address (`02:…`).
pub fn random_mac() -> String {
    let id = uuid::Uuid::new_v4();
    let b = id.as_bytes();
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3], b[4]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert!(is_mac("02:00:00:00:00:01"));
        assert!(is_mac("52:54:00:AB:cd:ef"));
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:01:02",
            "01:00:00:00:00:01", // multicast
            "00:00:00:00:00:00",
            "02-00-00-00-00-01",
            "0g:00:00:00:00:01",
            "2:00:00:00:00:001",
        ] {
            assert!(!is_mac(bad), "{bad}");
        }
        let m = random_mac();
        assert!(is_mac(&m) && m.starts_with("02:"), "{m}");
        assert_ne!(random_mac(), m);
    }
}
