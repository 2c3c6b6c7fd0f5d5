//! `hearth fn …` and `hearth runtime …`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use base64::Engine;
use clap::Subcommand;
use hearth_types::api::Page;
use hearth_types::function::{
    Alias, Function, FunctionMetrics, FunctionVersion, Invocation, InvokeResult, RuntimeInfo,
    Schedule, Secret,
};
use serde_json::json;

use super::client::{seg, ApiFailure, Client};
use super::key_values;
use super::output::{self, fields, table, when};

#[derive(Subcommand, Debug)]
pub enum FnCmd {
    /// Create a function, or update it when it exists
    Deploy {
        name: String,
        #[arg(long)]
        runtime: String,
        /// The code: a source file, an executable for `native`, or a directory (sent as a
        /// tar.gz and unpacked into /code; the handler's file at its top)
        #[arg(long)]
        code: PathBuf,
        #[arg(long)]
        handler: Option<String>,
        /// process or persistent
        #[arg(long)]
        mode: Option<String>,
        /// MiB per VM
        #[arg(long)]
        memory: Option<u64>,
        /// Seconds per invocation
        #[arg(long)]
        timeout: Option<u64>,
        /// K=V (repeatable)
        #[arg(long = "env", short = 'e')]
        env: Vec<String>,
        /// K=SECRET: env variable K takes the value of a secret (repeatable)
        #[arg(long = "secret")]
        secrets: Vec<String>,
        #[arg(long)]
        min_warm: Option<u32>,
        #[arg(long)]
        max_instances: Option<u32>,
        /// Seconds an idle VM is kept
        #[arg(long)]
        idle_ttl: Option<u64>,
        /// Invocations per second it accepts (0: no limit)
        #[arg(long)]
        rate_limit: Option<u32>,
    },
    List,
    Get {
        name: String,
    },
    Delete {
        name: String,
    },
    /// Run it once; prints its output, exits non-zero when it failed
    Invoke {
        name: String,
        /// The event (JSON)
        #[arg(long, short, default_value = "null")]
        data: String,
        /// Queue it and print the invocation id (see `hearth fn invocation ID`)
        #[arg(long = "async")]
        async_: bool,
    },
    /// One invocation: its status, output and logs
    Invocation {
        id: String,
    },
    /// Run a function on a schedule
    #[command(subcommand)]
    Schedule(ScheduleCmd),
    /// Publish the function as it is now as an immutable version (invoke it as NAME:N)
    Publish {
        name: String,
    },
    /// Its published versions
    Versions {
        name: String,
    },
    /// Aliases (invoke as NAME:ALIAS) that route to versions
    #[command(subcommand)]
    Alias(AliasCmd),
    /// Its newest invocations and what they logged
    Logs {
        name: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Keep printing invocations as they finish, until interrupted
        #[arg(long, short)]
        follow: bool,
    },
    Metrics {
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ScheduleCmd {
    /// EXPR: `@every 30s`, `@hourly`, `@daily`, or 5-field cron (UTC)
    Add {
        name: String,
        expr: String,
        /// The event each run gets (JSON)
        #[arg(long, short, default_value = "null")]
        data: String,
    },
    List {
        name: String,
    },
    Delete {
        name: String,
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum AliasCmd {
    /// Point ALIAS at a version; --weight V=PERCENT sends a share to another version
    Set {
        name: String,
        alias: String,
        #[arg(long)]
        version: u32,
        #[arg(long = "weight")]
        weights: Vec<String>,
    },
    List {
        name: String,
    },
    Delete {
        name: String,
        alias: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum SecretCmd {
    /// Create or replace a secret (the value is prompted for, or read from stdin)
    Set {
        name: String,
        #[arg(long)]
        value_stdin: bool,
    },
    List,
    Delete {
        name: String,
    },
}

pub async fn secret(client: Client, cmd: SecretCmd, json_out: bool) -> anyhow::Result<()> {
    match cmd {
        SecretCmd::Set { name, value_stdin } => {
            let value =
                super::client::read_secret(&format!("Value of secret {name}: "), value_stdin)?;
            let s: Secret = client
                .request(
                    reqwest::Method::PUT,
                    &format!("/v1/secrets/{}", seg(&name)),
                    Some(&json!({ "value": value })),
                )
                .await?;
            if json_out {
                output::json(&s)?;
            } else {
                println!("Secret {} set.", s.name);
            }
        }
        SecretCmd::List => {
            let page: Page<Secret> = client.get("/v1/secrets").await?;
            if json_out {
                return output::json(&page);
            }
            table(
                &["name", "created", "updated"],
                page.items
                    .iter()
                    .map(|s| vec![s.name.clone(), when(&s.created_at), when(&s.updated_at)]),
            );
        }
        SecretCmd::Delete { name } => {
            client
                .delete(&format!("/v1/secrets/{}", seg(&name)))
                .await?;
            if !json_out {
                println!("Deleted secret {name}.");
            }
        }
    }
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum RuntimeCmd {
    /// The runtimes, and whether functions can use them now
    List,
    /// Show a runtime's image on each host
    Get { name: String },
    /// Build a runtime's image on every ready host (a minute or two; progress is shown)
    Build {
        name: String,
        /// Start the build and return at once
        #[arg(long)]
        no_wait: bool,
    },
}

fn show(f: &Function, json_out: bool) -> anyhow::Result<()> {
    if json_out {
        return output::json(f);
    }
    fields(&[
        ("id", f.id.clone()),
        ("name", f.name.clone()),
        ("runtime", f.runtime.clone()),
        ("handler", f.handler.clone()),
        ("mode", f.mode.as_str().into()),
        ("memory", format!("{} MiB", f.memory_mib)),
        ("timeout", format!("{} s", f.timeout_s)),
        (
            "instances",
            format!(
                "{}–{} (idle TTL {} s)",
                f.min_warm, f.max_instances, f.idle_ttl_s
            ),
        ),
        (
            "code",
            format!(
                "{} bytes, sha256 {}",
                f.code_size,
                &f.code_sha256[..12.min(f.code_sha256.len())]
            ),
        ),
        ("updated", when(&f.updated_at)),
    ]);
    Ok(())
}

pub async fn function(client: Client, cmd: FnCmd, json_out: bool) -> anyhow::Result<ExitCode> {
    match cmd {
        FnCmd::Deploy {
            name,
            runtime,
            code,
            handler,
            mode,
            memory,
            timeout,
            env,
            secrets,
            min_warm,
            max_instances,
            idle_ttl,
            rate_limit,
        } => {
            let bytes = if code.is_dir() {
                let out = std::process::Command::new("tar")
                    .arg("-czf")
                    .arg("-")
                    .arg("-C")
                    .arg(&code)
                    .arg(".")
                    .output()
                    .with_context(|| format!("packing {} with tar", code.display()))?;
                anyhow::ensure!(
                    out.status.success(),
                    "packing {}: {}",
                    code.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                out.stdout
            } else {
                std::fs::read(&code).with_context(|| format!("reading {}", code.display()))?
            };
            let mut body = json!({
                "handler": handler, "mode": mode, "memory_mib": memory, "timeout_s": timeout,
                "min_warm": min_warm, "max_instances": max_instances, "idle_ttl_s": idle_ttl,
                "rate_limit_per_s": rate_limit,
            });
            match String::from_utf8(bytes.clone()) {
                Ok(text) if runtime != "native" && !code.is_dir() => body["code"] = text.into(),
                _ => {
                    body["code_base64"] = base64::engine::general_purpose::STANDARD
                        .encode(&bytes)
                        .into()
                }
            }
            if !env.is_empty() {
                body["env"] = key_values(&env, "--env", "KEY=VALUE")?.into();
            }
            if !secrets.is_empty() {
                body["secrets"] = key_values(&secrets, "--secret", "VAR=SECRET_NAME")?.into();
            }
            // Leave out what was not given, so an update changes only that.
            if let Some(o) = body.as_object_mut() {
                o.retain(|_, v| !v.is_null());
            }
            let path = format!("/v1/functions/{}", seg(&name));
            let f: Function = match client.get::<Function>(&path).await {
                Ok(_) => client.patch(&path, body).await?,
                Err(e)
                    if e.downcast_ref::<ApiFailure>()
                        .is_some_and(|f| f.code == "not_found") =>
                {
                    ensure_runtime(&client, &runtime).await?;
                    body["name"] = name.clone().into();
                    body["runtime"] = runtime.into();
                    client.post("/v1/functions", body).await?
                }
                Err(e) => return Err(e),
            };
            show(&f, json_out)?;
        }
        FnCmd::List => {
            let page: Page<Function> = client.get("/v1/functions").await?;
            if json_out {
                output::json(&page)?;
            } else {
                table(
                    &[
                        "name",
                        "runtime",
                        "mode",
                        "memory",
                        "timeout",
                        "instances",
                        "updated",
                    ],
                    page.items.iter().map(|f| {
                        vec![
                            f.name.clone(),
                            f.runtime.clone(),
                            f.mode.as_str().into(),
                            format!("{} MiB", f.memory_mib),
                            format!("{} s", f.timeout_s),
                            format!("{}–{}", f.min_warm, f.max_instances),
                            when(&f.updated_at),
                        ]
                    }),
                );
            }
        }
        FnCmd::Get { name } => show(
            &client.get(&format!("/v1/functions/{}", seg(&name))).await?,
            json_out,
        )?,
        FnCmd::Delete { name } => {
            client
                .delete(&format!("/v1/functions/{}", seg(&name)))
                .await?;
            if !json_out {
                println!("Deleted function {name}.");
            }
        }
        FnCmd::Invoke {
            name,
            data,
            async_: true,
        } => {
            let event: serde_json::Value =
                serde_json::from_str(&data).context("--data must be JSON, e.g. '{\"x\": 1}'")?;
            let i: Invocation = client
                .post(
                    &format!("/v1/functions/{}/invoke?async=true", seg(&name)),
                    event,
                )
                .await?;
            if json_out {
                output::json(&i)?;
            } else {
                println!("{}", i.id);
                eprintln!("queued; see it with `hearth fn invocation {}`", i.id);
            }
        }
        FnCmd::Invocation { id } => {
            let i: Invocation = client.get(&format!("/v1/invocations/{}", seg(&id))).await?;
            if json_out {
                output::json(&i)?;
            } else {
                fields(&[
                    ("id", i.id.clone()),
                    ("function", i.function.clone()),
                    ("status", i.status.clone()),
                    ("at", when(&i.at)),
                    (
                        "duration",
                        format!(
                            "{} ms{}",
                            i.duration_ms,
                            if i.cold_start { " (cold start)" } else { "" }
                        ),
                    ),
                    ("output", i.output.to_string()),
                ]);
                if let Some(e) = &i.error {
                    println!("error: {}", e.message);
                }
                print!("{}", i.logs);
            }
        }
        FnCmd::Schedule(cmd) => schedule(&client, cmd, json_out).await?,
        FnCmd::Publish { name } => {
            let v: FunctionVersion = client
                .post(&format!("/v1/functions/{}/versions", seg(&name)), json!({}))
                .await?;
            if json_out {
                output::json(&v)?;
            } else {
                println!(
                    "Published {name} version {} (code sha256 {}).",
                    v.version,
                    &v.code_sha256[..12.min(v.code_sha256.len())]
                );
            }
        }
        FnCmd::Versions { name } => {
            let page: Page<FunctionVersion> = client
                .get(&format!("/v1/functions/{}/versions", seg(&name)))
                .await?;
            if json_out {
                output::json(&page)?;
            } else {
                table(
                    &["version", "code", "memory", "timeout", "published"],
                    page.items.iter().map(|v| {
                        vec![
                            v.version.to_string(),
                            v.code_sha256.chars().take(12).collect(),
                            format!("{} MiB", v.memory_mib),
                            format!("{} s", v.timeout_s),
                            when(&v.created_at),
                        ]
                    }),
                );
            }
        }
        FnCmd::Alias(cmd) => alias(&client, cmd, json_out).await?,
        FnCmd::Invoke { name, data, .. } => {
            let event: serde_json::Value =
                serde_json::from_str(&data).context("--data must be JSON, e.g. '{\"x\": 1}'")?;
            let r: InvokeResult = client
                .post(&format!("/v1/functions/{}/invoke", seg(&name)), event)
                .await?;
            if json_out {
                output::json(&r)?;
            } else {
                if !r.logs.is_empty() {
                    std::io::stderr().write_all(r.logs.as_bytes())?;
                }
                match &r.error {
                    None => println!("{}", serde_json::to_string_pretty(&r.output)?),
                    Some(e) => eprintln!("error: {}", e.message),
                }
                eprintln!(
                    "({} ms{}, invocation {})",
                    r.duration_ms,
                    if r.cold_start { ", cold start" } else { "" },
                    r.invocation_id
                );
            }
            if r.error.is_some() {
                return Ok(ExitCode::FAILURE);
            }
        }
        FnCmd::Logs {
            name,
            limit,
            follow,
        } => {
            let path = format!("/v1/functions/{}/logs?limit={limit}", seg(&name));
            let page: Page<Invocation> = client.get(&path).await?;
            if json_out && !follow {
                return output::json(&page).map(|()| ExitCode::SUCCESS);
            }
            // Finished invocations already printed, so following prints each once.
            let mut seen = std::collections::HashSet::new();
            let mut items = page.items;
            loop {
                for i in items.iter().rev() {
                    if i.status == "queued" || i.status == "running" || !seen.insert(i.id.clone()) {
                        continue;
                    }
                    print_invocation(i, json_out)?;
                }
                if !follow {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    _ = tokio::signal::ctrl_c() => break,
                }
                items = client.get::<Page<Invocation>>(&path).await?.items;
            }
        }
        FnCmd::Metrics { name } => {
            let m: FunctionMetrics = client
                .get(&format!("/v1/functions/{}/metrics", seg(&name)))
                .await?;
            if json_out {
                output::json(&m)?;
            } else {
                fields(&[
                    ("invocations", m.invocations.to_string()),
                    ("errors", m.errors.to_string()),
                    ("cold starts", m.cold_starts.to_string()),
                    (
                        "duration",
                        format!(
                            "p50 {} ms, p90 {} ms, p99 {} ms",
                            m.duration_ms_p50, m.duration_ms_p90, m.duration_ms_p99
                        ),
                    ),
                    (
                        "VMs",
                        format!(
                            "{} idle, {} busy, {} booting",
                            m.instances_idle, m.instances_busy, m.instances_starting
                        ),
                    ),
                ]);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_invocation(i: &Invocation, json_out: bool) -> anyhow::Result<()> {
    if json_out {
        println!("{}", serde_json::to_string(i)?);
        return Ok(());
    }
    println!(
        "--- {} {} {} ms{} {}",
        when(&i.at),
        i.status,
        i.duration_ms,
        if i.cold_start { " cold" } else { "" },
        i.id
    );
    print!("{}", i.logs);
    if let Some(e) = &i.error {
        println!("error: {}", e.message);
    }
    std::io::stdout().flush()?;
    Ok(())
}

async fn alias(client: &Client, cmd: AliasCmd, json_out: bool) -> anyhow::Result<()> {
    let show_routes = |a: &Alias| {
        a.routes
            .iter()
            .map(|(v, w)| format!("v{v} {w}%"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match cmd {
        AliasCmd::Set {
            name,
            alias,
            version,
            weights,
        } => {
            let mut w = serde_json::Map::new();
            for kv in weights {
                let (v, p) = kv
                    .split_once('=')
                    .with_context(|| format!("--weight {kv:?}: use VERSION=PERCENT, e.g. 3=10"))?;
                let p: u32 = p
                    .parse()
                    .with_context(|| format!("--weight {kv:?}: the percent is not a number"))?;
                w.insert(v.to_string(), p.into());
            }
            let a: Alias = client
                .request(
                    reqwest::Method::PUT,
                    &format!("/v1/functions/{}/aliases/{}", seg(&name), seg(&alias)),
                    Some(&json!({"version": version, "weights": w})),
                )
                .await?;
            if json_out {
                output::json(&a)?;
            } else {
                println!("{name}:{} → {}", a.name, show_routes(&a));
            }
        }
        AliasCmd::List { name } => {
            let page: Page<Alias> = client
                .get(&format!("/v1/functions/{}/aliases", seg(&name)))
                .await?;
            if json_out {
                return output::json(&page);
            }
            table(
                &["alias", "routes", "updated"],
                page.items
                    .iter()
                    .map(|a| vec![a.name.clone(), show_routes(a), when(&a.updated_at)]),
            );
        }
        AliasCmd::Delete { name, alias } => {
            client
                .delete(&format!(
                    "/v1/functions/{}/aliases/{}",
                    seg(&name),
                    seg(&alias)
                ))
                .await?;
            if !json_out {
                println!("Deleted alias {alias}.");
            }
        }
    }
    Ok(())
}

async fn schedule(client: &Client, cmd: ScheduleCmd, json_out: bool) -> anyhow::Result<()> {
    match cmd {
        ScheduleCmd::Add { name, expr, data } => {
            let event: serde_json::Value =
                serde_json::from_str(&data).context("--data must be JSON")?;
            let s: Schedule = client
                .post(
                    &format!("/v1/functions/{}/schedules", seg(&name)),
                    json!({"expr": expr, "event": event}),
                )
                .await?;
            if json_out {
                output::json(&s)?;
            } else {
                println!("{}", s.id);
                eprintln!("next run {}", when(&s.next_run_at));
            }
        }
        ScheduleCmd::List { name } => {
            let page: Page<Schedule> = client
                .get(&format!("/v1/functions/{}/schedules", seg(&name)))
                .await?;
            if json_out {
                return output::json(&page);
            }
            table(
                &["id", "expr", "next run", "last run"],
                page.items.iter().map(|s| {
                    vec![
                        s.id.clone(),
                        s.expr.clone(),
                        when(&s.next_run_at),
                        super::output::opt_when(&s.last_run_at),
                    ]
                }),
            );
        }
        ScheduleCmd::Delete { name, id } => {
            client
                .delete(&format!(
                    "/v1/functions/{}/schedules/{}",
                    seg(&name),
                    seg(&id)
                ))
                .await?;
            if !json_out {
                println!("Deleted schedule {id}.");
            }
        }
    }
    Ok(())
}

/// Builds the runtime's image first when no host has it (deploying needs it).
async fn ensure_runtime(client: &Client, name: &str) -> anyhow::Result<()> {
    let Ok(rt) = client
        .get::<RuntimeInfo>(&format!("/v1/runtimes/{}", seg(name)))
        .await
    else {
        return Ok(()); // an unknown runtime: creating the function says which exist
    };
    if rt.available {
        return Ok(());
    }
    eprintln!("The {name} runtime is not built yet; building it now (once per host).");
    let _: RuntimeInfo = client
        .post(&format!("/v1/runtimes/{}/build", seg(name)), json!({}))
        .await?;
    wait_for_build(client, name).await.map(|_| ())
}

/// Follows a runtime's build on every host, printing each new step, until none is
/// building; fails when no host ends up with the image.
async fn wait_for_build(client: &Client, name: &str) -> anyhow::Result<RuntimeInfo> {
    let path = format!("/v1/runtimes/{}", seg(name));
    let started = std::time::Instant::now();
    let mut last: std::collections::HashMap<String, String> = Default::default();
    loop {
        let rt: RuntimeInfo = client.get(&path).await?;
        for h in &rt.hosts {
            let line = match h.state.as_str() {
                "building" => h.message.clone().unwrap_or_default(),
                "failed" => format!("failed: {}", h.error.clone().unwrap_or_default()),
                other => other.to_string(),
            };
            if last.get(&h.host_id) != Some(&line) {
                eprintln!("  [{} {:>4}s] {line}", h.host, started.elapsed().as_secs());
                last.insert(h.host_id.clone(), line);
            }
        }
        if !rt.hosts.iter().any(|h| h.state == "building") {
            if rt.available {
                return Ok(rt);
            }
            let why: Vec<String> = rt
                .hosts
                .iter()
                .filter_map(|h| h.error.as_ref().map(|e| format!("{}: {e}", h.host)))
                .collect();
            anyhow::bail!(
                "the {name} runtime could not be built{}",
                if why.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", why.join("; "))
                }
            );
        }
        if started.elapsed() > std::time::Duration::from_secs(45 * 60) {
            anyhow::bail!("the {name} runtime is still building after 45 minutes; check `hearth runtime get {name}`");
        }
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    }
}

fn show_runtime(rt: &RuntimeInfo, json_out: bool) -> anyhow::Result<()> {
    if json_out {
        return output::json(rt);
    }
    fields(&[
        ("name", rt.name.clone()),
        ("description", rt.description.clone()),
        ("handler", rt.handler.clone()),
        ("image", rt.image.clone()),
        (
            "available",
            rt.reason
                .clone()
                .map_or_else(|| "yes".into(), |r| format!("no: {r}")),
        ),
    ]);
    println!();
    table(
        &["host", "state", "size", "detail"],
        rt.hosts.iter().map(|h| {
            vec![
                h.host.clone(),
                h.state.clone(),
                if h.size_bytes > 0 {
                    format!("{:.1} MiB", h.size_bytes as f64 / (1 << 20) as f64)
                } else {
                    String::new()
                },
                h.error
                    .clone()
                    .or_else(|| h.message.clone())
                    .unwrap_or_default(),
            ]
        }),
    );
    Ok(())
}

pub async fn runtime(client: Client, cmd: RuntimeCmd, json_out: bool) -> anyhow::Result<()> {
    match cmd {
        RuntimeCmd::Get { name } => {
            let rt: RuntimeInfo = client.get(&format!("/v1/runtimes/{}", seg(&name))).await?;
            show_runtime(&rt, json_out)?;
        }
        RuntimeCmd::Build { name, no_wait } => {
            let rt: RuntimeInfo = client
                .post(&format!("/v1/runtimes/{}/build", seg(&name)), json!({}))
                .await?;
            let rt = if no_wait {
                rt
            } else {
                wait_for_build(&client, &name).await?
            };
            show_runtime(&rt, json_out)?;
        }
        RuntimeCmd::List => {
            let page: Page<RuntimeInfo> = client.get("/v1/runtimes").await?;
            if json_out {
                return output::json(&page);
            }
            table(
                &["name", "available", "description"],
                page.items.iter().map(|r| {
                    vec![
                        r.name.clone(),
                        if r.available {
                            "yes".into()
                        } else {
                            "no".into()
                        },
                        r.reason.clone().unwrap_or_else(|| r.description.clone()),
                    ]
                }),
            );
        }
    }
    Ok(())
}
