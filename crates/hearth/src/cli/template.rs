//! `hearth template …`: named VM specs, instantiated into VMs.

use clap::Subcommand;
use hearth_types::api::Page;
use hearth_types::template::Template;
use hearth_types::vm::Vm;
use serde_json::json;

use super::client::{seg, Client};
use super::output::{self, fields, table, when};

#[derive(Subcommand, Debug)]
pub enum TemplateCmd {
    Create {
        name: String,
        #[arg(long)]
        image: Option<String>,
        #[arg(long)]
        vcpus: Option<u32>,
        /// Memory in MiB
        #[arg(long)]
        memory: Option<u64>,
        /// Each instance's own disk in MiB
        #[arg(long)]
        disk: Option<u64>,
        /// none or user
        #[arg(long)]
        network: Option<String>,
        /// A volume made for each instance: NAME:SIZE_MIB (repeatable)
        #[arg(long = "volume")]
        volumes: Vec<String>,
        /// A shell script each instance runs once after its first boot
        #[arg(long)]
        user_data: Option<std::path::PathBuf>,
        /// qemu, firecracker or cloud-hypervisor [default: each host's best usable one]
        #[arg(long)]
        vmm: Option<String>,
    },
    List,
    Get {
        template: String,
    },
    Delete {
        template: String,
    },
    /// Make a VM from a template
    Instantiate {
        template: String,
        name: String,
        /// Return at once instead of waiting until the VM runs
        #[arg(long)]
        no_wait: bool,
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
}

fn show(t: &Template, json_out: bool) -> anyhow::Result<()> {
    if json_out {
        return output::json(t);
    }
    let s = &t.spec;
    let or = |o: Option<String>, d: &str| o.unwrap_or_else(|| d.to_string());
    fields(&[
        ("id", t.id.clone()),
        ("name", t.name.clone()),
        ("image", or(s.image.clone(), "default")),
        ("vcpus", or(s.vcpus.map(|v| v.to_string()), "1")),
        (
            "memory",
            or(s.memory_mib.map(|m| format!("{m} MiB")), "256 MiB"),
        ),
        (
            "disk",
            or(s.disk_mib.map(|m| format!("{m} MiB")), "1024 MiB"),
        ),
        ("network", or(s.network.clone(), "none")),
        (
            "volumes",
            s.volumes
                .iter()
                .map(|v| format!("{} ({} MiB)", v.name, v.size_mib))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        (
            "user data",
            s.user_data
                .as_ref()
                .map(|u| format!("{} bytes", u.len()))
                .unwrap_or_else(|| "-".into()),
        ),
        ("created", when(&t.created_at)),
    ]);
    Ok(())
}

pub async fn template(client: Client, cmd: TemplateCmd, json_out: bool) -> anyhow::Result<()> {
    match cmd {
        TemplateCmd::Create {
            name,
            image,
            vcpus,
            memory,
            disk,
            network,
            volumes,
            user_data,
            vmm,
        } => {
            let volumes = volumes
                .iter()
                .map(|v| {
                    let (n, size) = v.split_once(':').unwrap_or((v, ""));
                    let size: u64 = size.parse().map_err(|_| {
                        anyhow::anyhow!("--volume {v:?}: use NAME:SIZE_MIB, e.g. data:1024")
                    })?;
                    Ok(json!({"name": n, "size_mib": size}))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let user_data = match user_data {
                Some(p) => Some(
                    std::fs::read_to_string(&p)
                        .map_err(|e| anyhow::anyhow!("reading --user-data {}: {e}", p.display()))?,
                ),
                None => None,
            };
            let t: Template = client
                .post(
                    "/v1/templates",
                    json!({"name": name, "spec": {"image": image, "vcpus": vcpus,
                        "memory_mib": memory, "disk_mib": disk, "network": network,
                        "volumes": volumes, "user_data": user_data, "vmm": vmm}}),
                )
                .await?;
            show(&t, json_out)?;
        }
        TemplateCmd::List => {
            let page: Page<Template> = client.get("/v1/templates").await?;
            if json_out {
                output::json(&page)?;
            } else {
                table(
                    &["id", "name", "image", "created"],
                    page.items.iter().map(|t| {
                        vec![
                            t.id.clone(),
                            t.name.clone(),
                            t.spec.image.clone().unwrap_or_else(|| "default".into()),
                            when(&t.created_at),
                        ]
                    }),
                );
            }
        }
        TemplateCmd::Get { template } => show(
            &client
                .get(&format!("/v1/templates/{}", seg(&template)))
                .await?,
            json_out,
        )?,
        TemplateCmd::Delete { template } => {
            client
                .delete(&format!("/v1/templates/{}", seg(&template)))
                .await?;
            if !json_out {
                println!("Deleted template {template}.");
            }
        }
        TemplateCmd::Instantiate {
            template,
            name,
            no_wait,
            timeout,
        } => {
            let mut v: Vm = client
                .post(
                    &format!("/v1/templates/{}/instantiate", seg(&template)),
                    json!({ "name": name }),
                )
                .await?;
            if !no_wait {
                v = super::vm::wait(&client, &v.id, "running", timeout).await?;
            }
            super::vm::show(&v, json_out)?;
        }
    }
    Ok(())
}
