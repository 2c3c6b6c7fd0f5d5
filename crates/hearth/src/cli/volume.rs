//! `hearth volume …`: disks that outlive VMs.

use clap::Subcommand;
use hearth_types::api::Page;
use hearth_types::volume::{Volume, VolumeChange};
use serde_json::json;

use super::client::{seg, Client};
use super::output::{self, fields, table, when};

#[derive(Subcommand, Debug)]
pub enum VolumeCmd {
    /// Create a volume (an empty ext4, mounted at /volumes/NAME in the VM it is attached to)
    Create {
        name: String,
        /// Size in MiB
        #[arg(long)]
        size: u64,
    },
    List,
    Get {
        volume: String,
    },
    /// Attach to a VM (seen by the guest from the VM's next start)
    Attach {
        volume: String,
        vm: String,
    },
    /// Detach from its VM (which must be stopped)
    Detach {
        volume: String,
    },
    /// Grow it (applied at the next start of its VM)
    Resize {
        volume: String,
        /// The new size in MiB
        #[arg(long)]
        size: u64,
    },
    Delete {
        volume: String,
    },
}

fn show(v: &Volume, json_out: bool) -> anyhow::Result<()> {
    if json_out {
        return output::json(v);
    }
    fields(&[
        ("id", v.id.clone()),
        ("name", v.name.clone()),
        ("size", format!("{} MiB", v.size_mib)),
        ("vm", v.vm_id.clone().unwrap_or_else(|| "-".into())),
        ("host", v.host_id.clone().unwrap_or_else(|| "-".into())),
        ("mount", v.mount_path.clone()),
        ("created", when(&v.created_at)),
    ]);
    Ok(())
}

fn changed(c: &VolumeChange, json_out: bool) -> anyhow::Result<()> {
    if json_out {
        return output::json(c);
    }
    println!("{}", c.message);
    Ok(())
}

pub async fn volume(client: Client, cmd: VolumeCmd, json_out: bool) -> anyhow::Result<()> {
    match cmd {
        VolumeCmd::Create { name, size } => show(
            &client
                .post("/v1/volumes", json!({"name": name, "size_mib": size}))
                .await?,
            json_out,
        )?,
        VolumeCmd::List => {
            let page: Page<Volume> = client.get("/v1/volumes").await?;
            if json_out {
                output::json(&page)?;
            } else {
                table(
                    &["id", "name", "size", "vm", "created"],
                    page.items.iter().map(|v| {
                        vec![
                            v.id.clone(),
                            v.name.clone(),
                            format!("{} MiB", v.size_mib),
                            v.vm_id.clone().unwrap_or_else(|| "-".into()),
                            when(&v.created_at),
                        ]
                    }),
                );
            }
        }
        VolumeCmd::Get { volume } => show(
            &client.get(&format!("/v1/volumes/{}", seg(&volume))).await?,
            json_out,
        )?,
        VolumeCmd::Attach { volume, vm } => changed(
            &client
                .post(
                    &format!("/v1/volumes/{}/attach", seg(&volume)),
                    json!({ "vm": vm }),
                )
                .await?,
            json_out,
        )?,
        VolumeCmd::Detach { volume } => changed(
            &client
                .post(&format!("/v1/volumes/{}/detach", seg(&volume)), json!({}))
                .await?,
            json_out,
        )?,
        VolumeCmd::Resize { volume, size } => changed(
            &client
                .patch(
                    &format!("/v1/volumes/{}", seg(&volume)),
                    json!({ "size_mib": size }),
                )
                .await?,
            json_out,
        )?,
        VolumeCmd::Delete { volume } => {
            client
                .delete(&format!("/v1/volumes/{}", seg(&volume)))
                .await?;
            if !json_out {
                println!("Deleted volume {volume}.");
            }
        }
    }
    Ok(())
}
