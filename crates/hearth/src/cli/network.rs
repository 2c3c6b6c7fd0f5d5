//! `hearth network …`: managed networks VMs join.

use clap::Subcommand;
use hearth_types::network::Network;
use serde_json::json;

use super::client::{seg, Client};
use super::output::{self, fields, table, when};

#[derive(Subcommand, Debug)]
pub enum NetworkCmd {
    /// Create a network (hosts build it when a VM on it first starts there)
    Create {
        name: String,
        /// nat (egress through the host), isolated (no way out) or bridged (a host bridge)
        #[arg(long, default_value = "nat")]
        kind: String,
        /// The IPv4 range VMs get addresses from, e.g. 10.89.0.0/24
        #[arg(long)]
        cidr: String,
        /// The guests' default route [default: the range's first address]
        #[arg(long)]
        gateway: Option<String>,
        /// bridged: the host bridge to join, e.g. br0
        #[arg(long)]
        bridge: Option<String>,
        /// A name server for the guests (repeatable) [default: the host's own]
        #[arg(long)]
        dns: Vec<String>,
    },
    List,
    Get {
        network: String,
    },
    /// Delete a network no VM is on
    Delete {
        network: String,
    },
}

fn show(n: &Network, json_out: bool) -> anyhow::Result<()> {
    if json_out {
        return output::json(n);
    }
    fields(&[
        ("id", n.id.clone()),
        ("name", n.name.clone()),
        ("kind", n.kind.as_str().into()),
        ("cidr", n.cidr.clone()),
        ("gateway", n.gateway.clone()),
        ("bridge", n.bridge.clone().unwrap_or_else(|| "-".into())),
        (
            "dns",
            if n.dns.is_empty() {
                "the host's".into()
            } else {
                n.dns.join(", ")
            },
        ),
        ("vms", n.vm_count.to_string()),
        ("created", when(&n.created_at)),
    ]);
    Ok(())
}

pub async fn network(client: Client, cmd: NetworkCmd, json_out: bool) -> anyhow::Result<()> {
    match cmd {
        NetworkCmd::Create {
            name,
            kind,
            cidr,
            gateway,
            bridge,
            dns,
        } => show(
            &client
                .post(
                    "/v1/networks",
                    json!({"name": name, "kind": kind, "cidr": cidr, "gateway": gateway,
                           "bridge": bridge, "dns": dns}),
                )
                .await?,
            json_out,
        )?,
        NetworkCmd::List => {
            let list: Vec<Network> = client.get("/v1/networks").await?;
            if json_out {
                output::json(&list)?;
            } else {
                table(
                    &["id", "name", "kind", "cidr", "gateway", "vms"],
                    list.iter().map(|n| {
                        vec![
                            n.id.clone(),
                            n.name.clone(),
                            n.kind.as_str().into(),
                            n.cidr.clone(),
                            n.gateway.clone(),
                            n.vm_count.to_string(),
                        ]
                    }),
                );
            }
        }
        NetworkCmd::Get { network } => show(
            &client
                .get(&format!("/v1/networks/{}", seg(&network)))
                .await?,
            json_out,
        )?,
        NetworkCmd::Delete { network } => {
            client
                .delete(&format!("/v1/networks/{}", seg(&network)))
                .await?;
            if !json_out {
                println!("Deleted network {network}.");
            }
        }
    }
    Ok(())
}
