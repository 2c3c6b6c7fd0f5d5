//! The command line: argument definitions and what each command does.

mod client;
mod functions;
mod network;
mod output;
mod snapshot;
mod template;
mod vm;
mod volume;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hearth_types::api::{Event, Page};
use hearth_types::auth::{ApiKey, CreatedApiKey, LoginResponse, Role, User, WhoAmI};
use hearth_types::host::{Host, JoinToken};
use serde_json::json;

use crate::serve::{self, AgentArgs, NetArgs, ServerArgs};
use client::{read_secret, seg, Client, Credentials};
use output::{fields, opt_when, table, when};

#[derive(Parser, Debug)]
#[command(
    name = "hearth",
    version,
    about = "Hearth: microVMs, a control plane and serverless functions"
)]
pub struct Cli {
    /// The manager's URL [default: the one you logged in to, else http://127.0.0.1:18080]
    #[arg(long, global = true, env = "HEARTH_URL")]
    url: Option<String>,
    /// Print JSON instead of tables
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a manager and a local agent on this machine (SQLite by default)
    Up {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Run a manager only
    Manager(ServerArgs),
    /// Run a host agent that joins a manager
    Agent(AgentArgs),
    /// Print the OpenAPI document of the REST API
    Openapi,
    /// Log in and save the session token
    Login {
        #[arg(long, short, default_value = "admin")]
        username: String,
        /// Read the password from standard input instead of prompting
        #[arg(long)]
        password_stdin: bool,
        /// The CA certificate (PEM) of a manager serving TLS, saved with the login (a
        /// manager keeps it in <data dir>/ca.pem)
        #[arg(long, value_name = "FILE")]
        ca_cert: Option<std::path::PathBuf>,
    },
    /// Forget the saved session
    Logout,
    /// Show who you are logged in as
    Whoami,
    /// Hosts running an agent
    #[command(subcommand)]
    Host(HostCmd),
    /// Users (admin only)
    #[command(subcommand)]
    User(UserCmd),
    /// API keys
    #[command(subcommand, name = "api-key")]
    ApiKey(ApiKeyCmd),
    /// Virtual machines
    #[command(subcommand)]
    Vm(vm::VmCmd),
    /// VM snapshots: save, restore (as a new VM or in place), delete
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCmd),
    /// Managed networks: NAT, isolated or bridged, with addresses handed out
    #[command(subcommand)]
    Network(network::NetworkCmd),
    /// Volumes: disks that outlive VMs
    #[command(subcommand)]
    Volume(volume::VolumeCmd),
    /// Templates: named VM specs, instantiated into VMs
    #[command(subcommand)]
    Template(template::TemplateCmd),
    /// Serverless functions
    #[command(subcommand, name = "fn")]
    Fn(functions::FnCmd),
    /// Function runtimes
    #[command(subcommand)]
    Runtime(functions::RuntimeCmd),
    /// Secrets that functions read from their environment
    #[command(subcommand)]
    Secret(functions::SecretCmd),
    /// Images VMs boot from
    #[command(subcommand)]
    Image(vm::ImageCmd),
    /// The audit log, newest first
    Events {
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

#[derive(Subcommand, Debug)]
enum HostCmd {
    List,
    Get {
        host: String,
    },
    /// Take no new VMs on this host
    Cordon {
        host: String,
    },
    Uncordon {
        host: String,
    },
    /// Cordon a host and move its VMs elsewhere: says what moved and why the rest stays
    Drain {
        host: String,
    },
    /// Forget a host
    Remove {
        host: String,
    },
    /// Print a token for `hearth agent --join-token`
    JoinToken {
        #[arg(long, default_value_t = 60)]
        ttl_minutes: u32,
    },
}

#[derive(Subcommand, Debug)]
enum UserCmd {
    List,
    Get {
        user: String,
    },
    Create {
        username: String,
        #[arg(long, default_value = "viewer")]
        role: Role,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change a user's role
    SetRole {
        user: String,
        role: Role,
    },
    /// Set a user's password
    SetPassword {
        user: String,
        #[arg(long)]
        password_stdin: bool,
    },
    Delete {
        user: String,
    },
}

#[derive(Subcommand, Debug)]
enum ApiKeyCmd {
    List,
    /// Create a key; its secret is printed once
    Create {
        name: String,
        #[arg(long)]
        role: Option<Role>,
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    Revoke {
        id: String,
    },
}

/// `K=V` arguments of a repeatable flag as a JSON object.
fn key_values(
    items: &[String],
    flag: &str,
    form: &str,
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    let mut map = serde_json::Map::new();
    for kv in items {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("{flag} {kv:?}: use {form}"))?;
        map.insert(k.to_string(), v.into());
    }
    Ok(map)
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let json_out = cli.json;
    match cli.command {
        Command::Up { server, net } => {
            serve::init_logging();
            serve::up(server, net).await?;
        }
        Command::Manager(args) => {
            serve::init_logging();
            serve::manager(args).await?;
        }
        Command::Agent(args) => {
            serve::init_logging();
            serve::agent(args).await?;
        }
        Command::Openapi => {
            println!("{}", hearth_manager::http::openapi().to_pretty_json()?);
        }
        Command::Login {
            username,
            password_stdin,
            ca_cert,
        } => {
            let ca = ca_cert.as_deref().map(client::read_ca_cert).transpose()?;
            let client = Client::with_ca(cli.url, ca)?;
            let password = read_secret(
                &format!("Password for {username} at {}: ", client.url),
                password_stdin,
            )?;
            let resp: LoginResponse = client
                .post(
                    "/v1/auth/login",
                    json!({"username": username, "password": password}),
                )
                .await?;
            let path = Credentials {
                url: client.url.clone(),
                token: resp.token.clone(),
                ca_cert_pem: client.ca_cert_pem.clone(),
            }
            .save()?;
            if json_out {
                output::json(
                    &json!({"url": client.url, "expires_at": resp.expires_at, "saved_to": path}),
                )?;
            } else {
                println!(
                    "Logged in to {} as {username} (until {}).",
                    client.url,
                    when(&resp.expires_at)
                );
            }
        }
        Command::Logout => {
            let client = Client::new(cli.url)?;
            let _ = client
                .post::<serde_json::Value>("/v1/auth/logout", json!({}))
                .await;
            let _ = std::fs::remove_file(client::credentials_path());
            if !json_out {
                println!("Logged out.");
            }
        }
        Command::Whoami => {
            let me: WhoAmI = Client::new(cli.url)?.get("/v1/auth/whoami").await?;
            if json_out {
                output::json(&me)?;
            } else {
                println!("{} ({}) via {}", me.username, me.role, me.via);
            }
        }
        Command::Host(cmd) => host(Client::new(cli.url)?, cmd, json_out).await?,
        Command::Vm(cmd) => return vm::vm(Client::new(cli.url)?, cmd, json_out).await,
        Command::Snapshot(cmd) => snapshot::snapshot(Client::new(cli.url)?, cmd, json_out).await?,
        Command::Network(cmd) => network::network(Client::new(cli.url)?, cmd, json_out).await?,
        Command::Volume(cmd) => volume::volume(Client::new(cli.url)?, cmd, json_out).await?,
        Command::Template(cmd) => template::template(Client::new(cli.url)?, cmd, json_out).await?,
        Command::Image(cmd) => vm::image(Client::new(cli.url)?, cmd, json_out).await?,
        Command::Fn(cmd) => return functions::function(Client::new(cli.url)?, cmd, json_out).await,
        Command::Runtime(cmd) => functions::runtime(Client::new(cli.url)?, cmd, json_out).await?,
        Command::Secret(cmd) => functions::secret(Client::new(cli.url)?, cmd, json_out).await?,
        Command::User(cmd) => user(Client::new(cli.url)?, cmd, json_out).await?,
        Command::ApiKey(cmd) => api_key(Client::new(cli.url)?, cmd, json_out).await?,
        Command::Events { limit } => {
            let page: Page<Event> = Client::new(cli.url)?
                .get(&format!("/v1/events?limit={limit}"))
                .await?;
            if json_out {
                output::json(&page)?;
            } else {
                table(
                    &["time", "actor", "action", "status", "result"],
                    page.items.iter().map(|e| {
                        vec![
                            when(&e.at),
                            e.actor.clone(),
                            e.action.clone(),
                            e.status.to_string(),
                            e.result.clone(),
                        ]
                    }),
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn host_row(h: &Host) -> Vec<String> {
    let accel = h
        .accelerators
        .iter()
        .filter(|a| a.usable)
        .map(|a| a.name.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let vmms = h
        .vmms
        .iter()
        .filter(|v| v.usable)
        .map(|v| v.name.as_str())
        .collect::<Vec<_>>()
        .join(",");
    vec![
        h.id.clone(),
        h.name.clone(),
        format!("{:?}", h.status).to_lowercase(),
        format!("{}/{}", h.allocated.vcpus, h.capacity.vcpus),
        format!("{}/{} MiB", h.allocated.memory_mib, h.capacity.memory_mib),
        if accel.is_empty() { "-".into() } else { accel },
        if vmms.is_empty() { "-".into() } else { vmms },
        h.address.clone(),
    ]
}

const HOST_HEADER: [&str; 8] = [
    "id", "name", "status", "vcpus", "memory", "accel", "vmms", "address",
];

async fn host(client: Client, cmd: HostCmd, json_out: bool) -> anyhow::Result<()> {
    let show = |h: &Host| -> anyhow::Result<()> {
        if json_out {
            return output::json(h);
        }
        table(&HOST_HEADER, [host_row(h)]);
        Ok(())
    };
    match cmd {
        HostCmd::List => {
            let page: Page<Host> = client.get("/v1/hosts").await?;
            if json_out {
                return output::json(&page);
            }
            table(&HOST_HEADER, page.items.iter().map(host_row));
        }
        HostCmd::Get { host } => {
            let h: Host = client.get(&format!("/v1/hosts/{}", seg(&host))).await?;
            if json_out {
                return output::json(&h);
            }
            fields(&[
                ("id", h.id.clone()),
                ("name", h.name.clone()),
                ("status", format!("{:?}", h.status).to_lowercase()),
                ("address", h.address.clone()),
                ("agent", h.agent_version.clone()),
                (
                    "vcpus",
                    format!("{} allocated of {}", h.allocated.vcpus, h.capacity.vcpus),
                ),
                (
                    "memory",
                    format!(
                        "{} MiB allocated of {} MiB",
                        h.allocated.memory_mib, h.capacity.memory_mib
                    ),
                ),
                (
                    "disk",
                    match &h.disk {
                        Some(d) => format!(
                            "{} MiB free of {} MiB; VM disks use {} MiB, snapshots {} MiB",
                            d.free_bytes >> 20,
                            d.total_bytes >> 20,
                            d.vm_disks_bytes >> 20,
                            d.snapshots_bytes >> 20
                        ),
                        None => format!("{} MiB free", h.capacity.disk_mib),
                    },
                ),
                ("labels", labels_text(&h.labels)),
                ("last heartbeat", opt_when(&h.last_heartbeat_at)),
            ]);
            for a in &h.accelerators {
                println!(
                    "accel {:<6} {}{}",
                    a.name,
                    if a.usable { "usable" } else { "unusable" },
                    a.reason
                        .as_ref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                );
            }
            for v in &h.vmms {
                println!(
                    "vmm   {:<17} {}{}",
                    v.name,
                    if v.usable { "usable" } else { "unusable" },
                    v.reason
                        .as_ref()
                        .or(v.version.as_ref())
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                );
            }
        }
        HostCmd::Cordon { host } => show(
            &client
                .post(&format!("/v1/hosts/{}/cordon", seg(&host)), json!({}))
                .await?,
        )?,
        HostCmd::Drain { host } => {
            let r: hearth_types::host::DrainReport = client
                .post(&format!("/v1/hosts/{}/drain", seg(&host)), json!({}))
                .await?;
            if json_out {
                return output::json(&r);
            }
            println!("host {} is cordoned", r.host.name);
            for m in &r.moved {
                match &m.to_host {
                    Some(to) => println!("moved  {} → {to}: {}", m.vm, m.how),
                    None => println!("moved  {}: {}", m.vm, m.how),
                }
            }
            for s in &r.stayed {
                println!("stayed {}: {}", s.vm, s.reason);
            }
            if r.moved.is_empty() && r.stayed.is_empty() {
                println!("it had no VMs");
            }
        }
        HostCmd::Uncordon { host } => show(
            &client
                .post(&format!("/v1/hosts/{}/uncordon", seg(&host)), json!({}))
                .await?,
        )?,
        HostCmd::Remove { host } => {
            client.delete(&format!("/v1/hosts/{}", seg(&host))).await?;
            if !json_out {
                println!("Removed host {host}.");
            }
        }
        HostCmd::JoinToken { ttl_minutes } => {
            let t: JoinToken = client
                .post("/v1/hosts/join-tokens", json!({"ttl_minutes": ttl_minutes}))
                .await?;
            if json_out {
                return output::json(&t);
            }
            println!("{}", t.token);
            eprintln!("valid until {}; on the new host run:", when(&t.expires_at));
            eprintln!("  hearth agent --manager {} --join-token {} --data-dir /var/lib/hearth-agent --listen 0.0.0.0:18081", client.url, t.token);
        }
    }
    Ok(())
}

fn user_row(u: &User) -> Vec<String> {
    vec![
        u.id.clone(),
        u.username.clone(),
        u.role.to_string(),
        when(&u.created_at),
    ]
}

async fn user(client: Client, cmd: UserCmd, json_out: bool) -> anyhow::Result<()> {
    let header = ["id", "username", "role", "created"];
    let show = |u: &User| -> anyhow::Result<()> {
        if json_out {
            return output::json(u);
        }
        table(&header, [user_row(u)]);
        Ok(())
    };
    match cmd {
        UserCmd::List => {
            let page: Page<User> = client.get("/v1/users").await?;
            if json_out {
                return output::json(&page);
            }
            table(&header, page.items.iter().map(user_row));
        }
        UserCmd::Get { user } => show(&client.get(&format!("/v1/users/{}", seg(&user))).await?)?,
        UserCmd::Create {
            username,
            role,
            password_stdin,
        } => {
            let password = read_secret(
                &format!("Password for the new user {username}: "),
                password_stdin,
            )?;
            let u: User = client
                .post(
                    "/v1/users",
                    json!({"username": username, "password": password, "role": role}),
                )
                .await?;
            show(&u)?;
        }
        UserCmd::SetRole { user, role } => show(
            &client
                .patch(&format!("/v1/users/{}", seg(&user)), json!({"role": role}))
                .await?,
        )?,
        UserCmd::SetPassword {
            user,
            password_stdin,
        } => {
            let password = read_secret(&format!("New password for {user}: "), password_stdin)?;
            show(
                &client
                    .patch(
                        &format!("/v1/users/{}", seg(&user)),
                        json!({"password": password}),
                    )
                    .await?,
            )?
        }
        UserCmd::Delete { user } => {
            client.delete(&format!("/v1/users/{}", seg(&user))).await?;
            if !json_out {
                println!("Deleted user {user}.");
            }
        }
    }
    Ok(())
}

async fn api_key(client: Client, cmd: ApiKeyCmd, json_out: bool) -> anyhow::Result<()> {
    match cmd {
        ApiKeyCmd::List => {
            let page: Page<ApiKey> = client.get("/v1/api-keys").await?;
            if json_out {
                return output::json(&page);
            }
            table(
                &[
                    "id",
                    "name",
                    "prefix",
                    "role",
                    "created",
                    "expires",
                    "last used",
                ],
                page.items.iter().map(|k| {
                    vec![
                        k.id.clone(),
                        k.name.clone(),
                        k.prefix.clone(),
                        k.role.to_string(),
                        when(&k.created_at),
                        opt_when(&k.expires_at),
                        opt_when(&k.last_used_at),
                    ]
                }),
            );
        }
        ApiKeyCmd::Create {
            name,
            role,
            expires_in_days,
        } => {
            let k: CreatedApiKey = client
                .post(
                    "/v1/api-keys",
                    json!({"name": name, "role": role, "expires_in_days": expires_in_days}),
                )
                .await?;
            if json_out {
                return output::json(&k);
            }
            println!("{}", k.secret);
            eprintln!(
                "API key {} ({}) created. The secret above is shown only once;",
                k.key.name, k.key.role
            );
            eprintln!("use it as HEARTH_TOKEN=<secret> or `Authorization: Bearer <secret>`.");
        }
        ApiKeyCmd::Revoke { id } => {
            client.delete(&format!("/v1/api-keys/{}", seg(&id))).await?;
            if !json_out {
                println!("Revoked API key {id}.");
            }
        }
    }
    Ok(())
}

/// `k=v,k2=v2`, or `-` for none.
pub(crate) fn labels_text(labels: &std::collections::BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "-".into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}
