//! `hearth snapshot …`: take, list, inspect, delete and restore VM snapshots.

use clap::Subcommand;
use hearth_types::api::Page;
use hearth_types::snapshot::Snapshot;
use hearth_types::vm::Vm;
use serde_json::json;

use super::client::{seg, Client};
use super::output::{self, fields, table, when};

#[derive(Subcommand, Debug)]
pub enum SnapshotCmd {
    /// Save a running or paused VM's memory and disk (it is paused meanwhile)
    Create {
        vm: String,
        #[arg(long)]
        name: Option<String>,
    },
    /// List snapshots (of one VM with --vm)
    List {
        #[arg(long)]
        vm: Option<String>,
    },
    Get {
        snapshot: String,
    },
    Delete {
        snapshot: String,
    },
    /// Start a new VM from a snapshot, or roll its VM back with --in-place
    Restore {
        snapshot: String,
        /// The new VM's name
        #[arg(long, conflicts_with = "in_place")]
        name: Option<String>,
        /// Roll the snapshot's own VM back to it
        #[arg(long)]
        in_place: bool,
        /// Return at once instead of waiting until the VM runs
        #[arg(long)]
        no_wait: bool,
        /// How long to wait, in seconds
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn show(s: &Snapshot, json_out: bool) -> anyhow::Result<()> {
    if json_out {
        return output::json(s);
    }
    let p = |k: &str| {
        s.profile
            .get(k)
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            })
            .unwrap_or_else(|| "-".into())
    };
    fields(&[
        ("id", s.id.clone()),
        ("name", s.name.clone()),
        ("vm", format!("{} ({})", s.vm_name, s.vm_id)),
        ("host", s.host_id.clone()),
        ("image", s.image.clone()),
        (
            "size",
            format!(
                "{} (memory {}, disk {})",
                mib(s.size_bytes),
                mib(s.memory_bytes),
                mib(s.disk_bytes)
            ),
        ),
        ("vcpus", s.vcpus.to_string()),
        ("memory", format!("{} MiB", s.memory_mib)),
        ("paused for", format!("{} ms", s.save_ms)),
        ("vmm", format!("{} ({})", p("vmm"), p("vmm_version"))),
        ("accel", p("accel")),
        ("cpu", p("cpu_model")),
        ("kernel", p("kernel")),
        ("created", when(&s.created_at)),
    ]);
    Ok(())
}

pub async fn snapshot(client: Client, cmd: SnapshotCmd, json_out: bool) -> anyhow::Result<()> {
    match cmd {
        SnapshotCmd::Create { vm, name } => {
            let s: Snapshot = client
                .post(
                    &format!("/v1/vms/{}/snapshots", seg(&vm)),
                    json!({ "name": name }),
                )
                .await?;
            show(&s, json_out)?;
        }
        SnapshotCmd::List { vm } => {
            let path = match vm {
                Some(vm) => format!("/v1/snapshots?vm={}", seg(&vm)),
                None => "/v1/snapshots".into(),
            };
            let page: Page<Snapshot> = client.get(&path).await?;
            if json_out {
                output::json(&page)?;
            } else {
                table(
                    &["id", "name", "vm", "size", "paused", "created"],
                    page.items.iter().map(|s| {
                        vec![
                            s.id.clone(),
                            s.name.clone(),
                            s.vm_name.clone(),
                            mib(s.size_bytes),
                            format!("{} ms", s.save_ms),
                            when(&s.created_at),
                        ]
                    }),
                );
            }
        }
        SnapshotCmd::Get { snapshot } => show(
            &client
                .get(&format!("/v1/snapshots/{}", seg(&snapshot)))
                .await?,
            json_out,
        )?,
        SnapshotCmd::Delete { snapshot } => {
            client
                .delete(&format!("/v1/snapshots/{}", seg(&snapshot)))
                .await?;
            if !json_out {
                println!("Deleted snapshot {snapshot}.");
            }
        }
        SnapshotCmd::Restore {
            snapshot,
            name,
            in_place,
            no_wait,
            timeout,
        } => {
            let mut v: Vm = client
                .post(
                    &format!("/v1/snapshots/{}/restore", seg(&snapshot)),
                    json!({ "name": name, "in_place": in_place }),
                )
                .await?;
            if !no_wait {
                if !json_out {
                    eprintln!("Restoring {snapshot} into VM {} ({})…", v.name, v.id);
                }
                v = super::vm::wait(&client, &v.id, "running", timeout).await?;
            }
            super::vm::show(&v, json_out)?;
        }
    }
    Ok(())
}
