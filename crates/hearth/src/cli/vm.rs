//! `hearth vm …` and `hearth image …`: VMs through the REST API, including the streaming
//! ones (console follow and the interactive shell, over WebSockets).

use anyhow::Context;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Subcommand;
use futures_util::{SinkExt, StreamExt};
use hearth_agent::image::imported::Part;
use hearth_types::api::Page;
use hearth_types::vm::{ExecResult, Image, ImageBuild, Vm, VmMetrics};
use serde_json::json;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;

use super::client::{seg, Client};
use super::output::{self, fields, opt_when, table, when};

#[derive(Subcommand, Debug)]
pub enum VmCmd {
    /// Create a VM (and start it, unless --no-start)
    Create {
        name: String,
        #[arg(long, default_value = "default")]
        image: String,
        #[arg(long, default_value_t = 1)]
        vcpus: u32,
        /// Memory in MiB
        #[arg(long, default_value_t = 256)]
        memory: u64,
        /// Its own disk in MiB, holding root filesystem changes (0: none, changes live in
        /// memory)
        #[arg(long, default_value_t = 1024)]
        disk: u64,
        /// A managed network (name or id), user (QEMU user-mode networking: egress through
        /// the host) or none [default: the network named default if there is one, else none]
        #[arg(long)]
        network: Option<String>,
        /// The NIC's MAC address on a managed network [default: a random one]
        #[arg(long)]
        mac: Option<String>,
        /// Forward a port of the host's loopback into the guest: HOST:GUEST[/udp]
        /// (repeatable; needs a network; UDP only with user)
        #[arg(long = "port", short = 'p')]
        ports: Vec<String>,
        /// Pin it to a host (id or name)
        #[arg(long)]
        host: Option<String>,
        /// Place it only on a host with this label, KEY=VALUE (repeatable)
        #[arg(long = "host-label", value_parser = hearth_types::host::parse_label)]
        host_labels: Vec<(String, String)>,
        /// qemu, firecracker or cloud-hypervisor [default: the host's best usable one:
        /// firecracker on hardware KVM when installed, else qemu]
        #[arg(long)]
        vmm: Option<String>,
        #[arg(long)]
        no_start: bool,
        /// Wait until it runs
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, in seconds
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    List,
    Get {
        vm: String,
    },
    Start {
        vm: String,
        #[arg(long)]
        wait: bool,
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// Shut the guest down (then ACPI, then kill); waits until stopped
    Stop {
        vm: String,
        /// Kill the VMM at once
        #[arg(long)]
        force: bool,
    },
    Reboot {
        vm: String,
        #[arg(long)]
        wait: bool,
    },
    /// Rename a VM, or (stopped) change its vCPUs or memory, or grow its disk
    Update {
        vm: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        vcpus: Option<u32>,
        /// Memory in MiB
        #[arg(long)]
        memory: Option<u64>,
        /// Its own disk's new size in MiB (it only grows)
        #[arg(long)]
        disk: Option<u64>,
    },
    /// Freeze a running VM (its memory stays; nothing runs until resume)
    Pause {
        vm: String,
    },
    /// Let a paused VM run again
    Resume {
        vm: String,
    },
    /// Forward a port of the host's loopback into the guest, HOST:GUEST[/udp] (at once if
    /// the VM runs); with --remove, HOST[/udp] stops forwarding
    PortForward {
        vm: String,
        port: String,
        #[arg(long)]
        remove: bool,
    },
    /// Delete a VM (its snapshots stay unless --snapshots)
    Delete {
        vm: String,
        /// Delete its snapshots too
        #[arg(long)]
        snapshots: bool,
    },
    /// Run a command in the guest; exits with its exit code
    Exec {
        vm: String,
        /// Environment for the command, K=V (repeatable)
        #[arg(long = "env", short = 'e')]
        env: Vec<String>,
        /// Feed this program's standard input to the command
        #[arg(long, short = 'i')]
        stdin: bool,
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// The serial console log
    Console {
        vm: String,
        /// Keep printing new output until interrupted
        #[arg(long, short)]
        follow: bool,
    },
    /// An interactive shell in the guest
    Shell {
        vm: String,
    },
    /// CPU, memory, disk, uptime and load
    Metrics {
        vm: String,
        /// Print a line every second until interrupted
        #[arg(long, short)]
        watch: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ImageCmd {
    List,
    /// Import a container image as a VM image: an OCI image layout, a directory or a tar (as
    /// skopeo, umoci or docker save write it); its entrypoint runs at every boot
    ImportOci {
        /// The layout's directory or tar
        path: std::path::PathBuf,
        #[arg(long)]
        name: String,
    },
    /// Import a file as an image: a root filesystem (`--kind rootfs`: an ext4 image, or a
    /// tar of the tree), or a kernel or an initramfs booted with the default image's other
    /// part (`--kind kernel|initrd`)
    Import {
        file: std::path::PathBuf,
        #[arg(long)]
        name: String,
        /// rootfs, kernel or initrd
        #[arg(long, default_value = "rootfs")]
        kind: String,
    },
    /// An image build's state on each host
    BuildStatus {
        name: String,
    },
    /// Build a VM image: `debian` (a minimal Debian with --packages, on every host), or
    /// --from-dir DIR (a directory holding a root filesystem)
    Build {
        /// debian
        base: Option<String>,
        #[arg(long)]
        name: String,
        #[arg(long)]
        from_dir: Option<std::path::PathBuf>,
        /// Debian packages to add, comma-separated (python3,curl)
        #[arg(long, value_delimiter = ',')]
        packages: Vec<String>,
        /// Return once the build has started
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for the build, in seconds
        #[arg(long, default_value_t = 1800)]
        timeout: u64,
    },
}

/// Starts a Debian image build and (with `wait`) shows each host's progress until it ends.
async fn build_debian(
    client: &Client,
    name: &str,
    packages: &[String],
    wait: bool,
    timeout_s: u64,
    json_out: bool,
) -> anyhow::Result<()> {
    let mut b: ImageBuild = client
        .post(
            "/v1/images/builds",
            json!({"name": name, "base": "debian", "packages": packages}),
        )
        .await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(timeout_s);
    let mut shown = std::collections::HashMap::new();
    while wait && b.hosts.iter().any(|h| h.state == "building") {
        for h in &b.hosts {
            let line = h.message.clone().unwrap_or_default();
            if !json_out && !line.is_empty() && shown.get(&h.host) != Some(&line) {
                eprintln!("{}: {line}", h.host);
                shown.insert(h.host.clone(), line);
            }
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the build of {name} is still running after {timeout_s} s; see `hearth image build-status {name}`"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        b = client
            .get(&format!("/v1/images/builds/{}", seg(name)))
            .await?;
    }
    if json_out {
        return output::json(&b);
    }
    for h in &b.hosts {
        match h.state.as_str() {
            "ready" => println!(
                "{}: image {name} ready ({:.1} MiB, {:.0} s)",
                h.host,
                h.size_bytes as f64 / 1048576.0,
                h.elapsed_ms as f64 / 1000.0
            ),
            "failed" => eprintln!(
                "{}: the build failed: {}",
                h.host,
                h.error.as_deref().unwrap_or("no reason given")
            ),
            other => println!("{}: {other}", h.host),
        }
    }
    anyhow::ensure!(
        !b.hosts.iter().any(|h| h.state == "failed"),
        "the build of {name} failed"
    );
    Ok(())
}

/// Uploads `path` (a tar, or a directory tarred first) as image `name` in `format`.
async fn import_image(
    client: &Client,
    path: &std::path::Path,
    name: &str,
    format: &str,
    json_out: bool,
) -> anyhow::Result<()> {
    use sha2::Digest;
    let tarred;
    let file = if path.is_dir() {
        if !json_out {
            eprintln!("packing {} into a tar…", path.display());
        }
        tarred = tempfile::NamedTempFile::new()?;
        let mut b = tar::Builder::new(std::io::BufWriter::new(tarred.reopen()?));
        b.follow_symlinks(false);
        b.append_dir_all(".", path)
            .with_context(|| format!("reading {}", path.display()))?;
        b.into_inner()?.into_inner().map_err(|e| e.into_error())?;
        tarred.path().to_path_buf()
    } else {
        path.to_path_buf()
    };
    let mut hash = sha2::Sha256::new();
    std::io::copy(
        &mut std::fs::File::open(&file).with_context(|| format!("opening {}", file.display()))?,
        &mut hash,
    )?;
    let sha = hex::encode(hash.finalize());
    let image: Image = client
        .upload(
            &format!("/v1/images?name={}&format={format}&sha256={sha}", seg(name)),
            &file,
            !json_out,
        )
        .await?;
    if json_out {
        return output::json(&image);
    }
    println!(
        "Imported image {} ({:.1} MiB) on {}; boot it with `hearth vm create NAME --image {}`",
        image.name,
        image.size_bytes as f64 / 1048576.0,
        image.hosts.join(", "),
        image.name
    );
    Ok(())
}

const HEADER: [&str; 9] = [
    "id", "name", "state", "vcpus", "memory", "image", "vmm", "accel", "created",
];

fn row(v: &Vm) -> Vec<String> {
    vec![
        v.id.clone(),
        v.name.clone(),
        v.state.to_string(),
        v.vcpus.to_string(),
        format!("{} MiB", v.memory_mib),
        v.image.clone(),
        v.vmm.clone(),
        v.accelerator.clone().unwrap_or_else(|| "-".into()),
        when(&v.created_at),
    ]
}

/// `HOST:GUEST[/tcp|/udp]` as the API's port forward.
fn parse_port(s: &str) -> anyhow::Result<serde_json::Value> {
    let (ports, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    let parsed = ports
        .split_once(':')
        .and_then(|(h, g)| Some((h.parse::<u16>().ok()?, g.parse::<u16>().ok()?)));
    match (parsed, proto) {
        (Some((h, g)), "tcp" | "udp") => {
            Ok(json!({"host_port": h, "guest_port": g, "protocol": proto}))
        }
        _ => anyhow::bail!(
            "port forward {s:?}: use HOST:GUEST, optionally with /tcp or /udp (e.g. 8080:80)"
        ),
    }
}

pub(super) fn show(v: &Vm, json_out: bool) -> anyhow::Result<()> {
    if json_out {
        return output::json(v);
    }
    fields(&[
        ("id", v.id.clone()),
        ("name", v.name.clone()),
        ("state", v.state.to_string()),
        ("desired", v.desired_state.as_str().to_string()),
        ("host", v.host_id.clone().unwrap_or_else(|| "-".into())),
        ("host labels", super::labels_text(&v.host_labels)),
        ("image", v.image.clone()),
        ("vcpus", v.vcpus.to_string()),
        ("memory", format!("{} MiB", v.memory_mib)),
        (
            "network",
            match (&v.ip, &v.network_note) {
                (_, Some(note)) => format!("{} ({note})", v.network),
                (Some(ip), None) => format!("{} ({ip})", v.network),
                (None, None) => v.network.clone(),
            },
        ),
        ("mac", v.mac.clone().unwrap_or_else(|| "-".into())),
        (
            "ports",
            if v.ports.is_empty() {
                "-".into()
            } else {
                v.ports
                    .iter()
                    .map(|p| {
                        format!(
                            "127.0.0.1:{} → {}/{}",
                            p.host_port,
                            p.guest_port,
                            p.protocol.as_str()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ),
        (
            "disk",
            if v.disk_mib == 0 {
                "none (changes live in memory)".into()
            } else {
                format!("{} MiB", v.disk_mib)
            },
        ),
        (
            "vmm",
            format!(
                "{} ({})",
                v.vmm,
                v.accelerator.as_deref().unwrap_or("not started")
            ),
        ),
        (
            "boot",
            v.boot_ms
                .map(|b| format!("{:.2} s", b as f64 / 1000.0))
                .unwrap_or_else(|| "-".into()),
        ),
        ("started", opt_when(&v.started_at)),
        ("created", when(&v.created_at)),
    ]);
    if let Some(r) = &v.reason {
        println!("reason: {r}");
    }
    if let Some(t) = &v.console_tail {
        println!("last console lines:\n{t}");
    }
    Ok(())
}

pub(super) async fn wait(
    client: &Client,
    vm: &str,
    state: &str,
    timeout_s: u64,
) -> anyhow::Result<Vm> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout_s);
    loop {
        let left = deadline
            .saturating_duration_since(std::time::Instant::now())
            .as_secs()
            .clamp(1, 60);
        match client
            .get::<Vm>(&format!(
                "/v1/vms/{}/wait?state={state}&timeout_s={left}",
                seg(vm)
            ))
            .await
        {
            Ok(v) => return Ok(v),
            Err(e)
                if e.downcast_ref::<super::client::ApiFailure>()
                    .is_some_and(|f| f.code == "timeout")
                    && std::time::Instant::now() < deadline => {}
            Err(e) => return Err(e),
        }
    }
}

pub async fn vm(client: Client, cmd: VmCmd, json_out: bool) -> anyhow::Result<ExitCode> {
    match cmd {
        VmCmd::Create {
            name,
            image,
            vcpus,
            memory,
            disk,
            network,
            mac,
            ports,
            host,
            host_labels,
            vmm,
            no_start,
            wait: w,
            timeout,
        } => {
            let host_labels: std::collections::BTreeMap<_, _> = host_labels.into_iter().collect();
            let ports = ports
                .iter()
                .map(|p| parse_port(p))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut v: Vm = client
                .post(
                    "/v1/vms",
                    json!({"name": name, "image": image, "vcpus": vcpus, "memory_mib": memory,
                           "disk_mib": disk, "network": network, "mac": mac, "ports": ports,
                           "start": !no_start, "host_id": host, "host_labels": host_labels,
                           "vmm": vmm}),
                )
                .await?;
            if w && !no_start {
                if !json_out {
                    eprintln!("Created VM {} ({}); waiting for it to boot…", v.name, v.id);
                }
                v = wait(&client, &v.id, "running", timeout).await?;
            }
            show(&v, json_out)?;
        }
        VmCmd::List => {
            let page: Page<Vm> = client.get("/v1/vms").await?;
            if json_out {
                output::json(&page)?;
            } else {
                table(&HEADER, page.items.iter().map(row));
            }
        }
        VmCmd::Get { vm } => show(
            &client.get(&format!("/v1/vms/{}", seg(&vm))).await?,
            json_out,
        )?,
        VmCmd::Start {
            vm,
            wait: w,
            timeout,
        } => {
            let mut v: Vm = client
                .post(&format!("/v1/vms/{}/start", seg(&vm)), json!({}))
                .await?;
            if w {
                v = wait(&client, &v.id, "running", timeout).await?;
            }
            show(&v, json_out)?;
        }
        VmCmd::Stop { vm, force } => {
            let v: Vm = client
                .post(
                    &format!("/v1/vms/{}/stop?force={force}", seg(&vm)),
                    json!({}),
                )
                .await?;
            let v = wait(&client, &v.id, "stopped", 60).await?;
            show(&v, json_out)?;
        }
        VmCmd::Reboot { vm, wait: w } => {
            let mut v: Vm = client
                .post(&format!("/v1/vms/{}/reboot", seg(&vm)), json!({}))
                .await?;
            if w {
                v = wait(&client, &v.id, "running", 120).await?;
            }
            show(&v, json_out)?;
        }
        VmCmd::Update {
            vm,
            name,
            vcpus,
            memory,
            disk,
        } => {
            let v: Vm = client
                .patch(
                    &format!("/v1/vms/{}", seg(&vm)),
                    json!({"name": name, "vcpus": vcpus, "memory_mib": memory, "disk_mib": disk}),
                )
                .await?;
            show(&v, json_out)?;
        }
        VmCmd::Pause { vm } => {
            let v: Vm = client
                .post(&format!("/v1/vms/{}/pause", seg(&vm)), json!({}))
                .await?;
            show(&v, json_out)?;
        }
        VmCmd::PortForward { vm, port, remove } => {
            let path = format!("/v1/vms/{}/ports", seg(&vm));
            let v: Vm = if remove {
                let (host, proto) = port.split_once('/').unwrap_or((&port, "tcp"));
                let host: u16 = host.parse().map_err(|_| {
                    anyhow::anyhow!("{port:?}: give the host port, e.g. 8080 or 5353/udp")
                })?;
                client
                    .delete_json(&format!("{path}/{host}?protocol={}", seg(proto)))
                    .await?
            } else {
                client.post(&path, parse_port(&port)?).await?
            };
            show(&v, json_out)?;
        }
        VmCmd::Resume { vm } => {
            let v: Vm = client
                .post(&format!("/v1/vms/{}/resume", seg(&vm)), json!({}))
                .await?;
            show(&v, json_out)?;
        }
        VmCmd::Delete { vm, snapshots } => {
            client
                .delete(&format!("/v1/vms/{}?snapshots={snapshots}", seg(&vm)))
                .await?;
            if !json_out {
                println!("Deleted VM {vm}.");
            }
        }
        VmCmd::Exec {
            vm,
            env,
            stdin,
            timeout,
            command,
        } => {
            let envs = super::key_values(&env, "--env", "KEY=VALUE")?;
            let input = if stdin {
                let mut s = String::new();
                tokio::io::stdin().read_to_string(&mut s).await?;
                Some(s)
            } else {
                None
            };
            let out: ExecResult = client
                .post(
                    &format!("/v1/vms/{}/exec", seg(&vm)),
                    json!({"command": command, "env": envs, "stdin": input, "timeout_s": timeout}),
                )
                .await?;
            if json_out {
                output::json(&out)?;
            } else {
                std::io::stdout().write_all(out.stdout.as_bytes())?;
                std::io::stderr().write_all(out.stderr.as_bytes())?;
                if out.timed_out {
                    eprintln!("hearth: the command was killed after {timeout} s");
                }
                if out.truncated {
                    eprintln!("hearth: output beyond 8 MiB was dropped");
                }
            }
            return Ok(ExitCode::from(out.exit_code.clamp(0, 255) as u8));
        }
        VmCmd::Console { vm, follow } => {
            let path = format!("/v1/vms/{}/console", seg(&vm));
            if !follow {
                print!("{}", client.text(&path).await?);
                return Ok(ExitCode::SUCCESS);
            }
            let mut ws = client.websocket(&path).await?;
            let mut out = std::io::stdout();
            loop {
                tokio::select! {
                    m = ws.next() => match m {
                        Some(Ok(Message::Binary(b))) => { out.write_all(&b)?; out.flush()?; }
                        Some(Ok(Message::Text(t))) => { out.write_all(t.as_bytes())?; out.flush()?; }
                        Some(Ok(Message::Close(_))) | None => break,
                        Some(Ok(_)) => {}
                        Some(Err(e)) => anyhow::bail!("console stream: {e}"),
                    },
                    _ = tokio::signal::ctrl_c() => break,
                }
            }
        }
        VmCmd::Shell { vm } => return shell(&client, &vm).await,
        VmCmd::Metrics { vm, watch } => {
            let path = format!("/v1/vms/{}/metrics", seg(&vm));
            if !watch {
                let m: VmMetrics = client.get(&path).await?;
                print_metrics(&m, json_out)?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut ws = client.websocket(&path).await?;
            loop {
                tokio::select! {
                    m = ws.next() => match m {
                        Some(Ok(Message::Text(t))) => {
                            let v: serde_json::Value = serde_json::from_str(&t)?;
                            if let Some(e) = v.get("error") { anyhow::bail!("{}", e.as_str().unwrap_or("metrics failed")); }
                            print_metrics(&serde_json::from_value(v)?, json_out)?;
                        }
                        Some(Ok(Message::Close(_))) | None => break,
                        Some(Ok(_)) => {}
                        Some(Err(e)) => anyhow::bail!("metrics stream: {e}"),
                    },
                    _ = tokio::signal::ctrl_c() => break,
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_metrics(m: &VmMetrics, json_out: bool) -> anyhow::Result<()> {
    if json_out {
        return output::json(m);
    }
    println!(
        "cpu {:5.1}%  mem {:.0}/{:.0} MiB  disk {:.0}/{:.0} MiB  load {:.2} {:.2} {:.2}  procs {}  up {:.0} s",
        m.cpu_percent,
        m.memory_used_mib,
        m.memory_total_mib,
        m.disk_used_mib,
        m.disk_total_mib,
        m.load1,
        m.load5,
        m.load15,
        m.processes,
        m.uptime_s
    );
    Ok(())
}

nix::ioctl_read_bad!(tiocgwinsz, nix::libc::TIOCGWINSZ, nix::libc::winsize);

fn terminal_size() -> (u16, u16) {
    let mut ws = nix::libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ on stdout with a valid winsize to fill.
    match unsafe { tiocgwinsz(1, &mut ws) } {
        Ok(_) if ws.ws_row > 0 && ws.ws_col > 0 => (ws.ws_row, ws.ws_col),
        _ => (24, 80),
    }
}

/// Puts the terminal in raw mode and restores it on drop.
struct RawMode(Option<nix::sys::termios::Termios>);

impl RawMode {
    fn enter() -> RawMode {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return RawMode(None);
        }
        let Ok(saved) = tcgetattr(&stdin) else {
            return RawMode(None);
        };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &raw);
        RawMode(Some(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
        }
    }
}

async fn shell(client: &Client, vm: &str) -> anyhow::Result<ExitCode> {
    let (rows, cols) = terminal_size();
    let mut ws = client
        .websocket(&format!(
            "/v1/vms/{}/shell?rows={rows}&cols={cols}",
            seg(vm)
        ))
        .await?;
    let raw = RawMode::enter();
    let mut stdin = tokio::io::stdin();
    let mut out = std::io::stdout();
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
    let mut buf = vec![0u8; 4096];
    let mut stdin_open = true;
    let mut code = 0i32;
    loop {
        tokio::select! {
            n = stdin.read(&mut buf), if stdin_open => match n {
                Ok(0) | Err(_) => {
                    stdin_open = false;
                    // End of input (not a terminal): end the shell like a typed ^D would.
                    let _ = ws.send(Message::binary(vec![4u8])).await;
                }
                Ok(n) => ws.send(Message::binary(buf[..n].to_vec())).await?,
            },
            _ = winch.recv() => {
                let (rows, cols) = terminal_size();
                ws.send(Message::text(json!({"resize": {"rows": rows, "cols": cols}}).to_string())).await?;
            }
            m = ws.next() => match m {
                Some(Ok(Message::Binary(b))) => { out.write_all(&b)?; out.flush()?; }
                Some(Ok(Message::Text(t))) => {
                    let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
                    if let Some(c) = v.get("exit_code").and_then(|c| c.as_i64()) {
                        code = c as i32;
                    } else if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
                        drop(raw);
                        anyhow::bail!("shell: {e}");
                    }
                }
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => { drop(raw); anyhow::bail!("shell connection: {e}"); }
            },
        }
    }
    drop(raw);
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

pub async fn image(client: Client, cmd: ImageCmd, json_out: bool) -> anyhow::Result<()> {
    match cmd {
        ImageCmd::BuildStatus { name } => {
            let b: ImageBuild = client
                .get(&format!("/v1/images/builds/{}", seg(&name)))
                .await?;
            if json_out {
                return output::json(&b);
            }
            table(
                &["host", "state", "step", "error", "size", "time"],
                b.hosts.iter().map(|h| {
                    vec![
                        h.host.clone(),
                        h.state.clone(),
                        h.message.clone().unwrap_or_else(|| "-".into()),
                        h.error.clone().unwrap_or_else(|| "-".into()),
                        format!("{:.1} MiB", h.size_bytes as f64 / 1048576.0),
                        format!("{:.0} s", h.elapsed_ms as f64 / 1000.0),
                    ]
                }),
            );
        }
        ImageCmd::ImportOci { path, name } => {
            import_image(&client, &path, &name, "oci", json_out).await?
        }
        ImageCmd::Import { file, name, kind } => {
            anyhow::ensure!(file.is_file(), "{} is not a file", file.display());
            let format = match kind.as_str() {
                "kernel" | "initrd" => kind.as_str(),
                // An ext4 image, or else a tar of a tree.
                "rootfs" if Part::Rootfs.check_file(&file).is_ok() => "ext4",
                "rootfs" => "rootfs-tar",
                other => anyhow::bail!("--kind is rootfs, kernel or initrd, not {other:?}"),
            };
            import_image(&client, &file, &name, format, json_out).await?
        }
        ImageCmd::Build {
            base,
            name,
            from_dir,
            packages,
            no_wait,
            timeout,
        } => match (base.as_deref(), from_dir) {
            (None, Some(dir)) if packages.is_empty() => {
                anyhow::ensure!(dir.is_dir(), "{} is not a directory", dir.display());
                import_image(&client, &dir, &name, "rootfs-tar", json_out).await?
            }
            (Some("debian"), None) => {
                build_debian(&client, &name, &packages, !no_wait, timeout, json_out).await?
            }
            _ => anyhow::bail!(
                "use `hearth image build debian --name N [--packages a,b]` or \
                 `hearth image build --from-dir DIR --name N`"
            ),
        },
        ImageCmd::List => {
            let page: Page<Image> = client.get("/v1/images").await?;
            if json_out {
                return output::json(&page);
            }
            table(
                &["name", "kind", "kernel", "size", "hosts"],
                page.items.iter().map(|i| {
                    vec![
                        i.name.clone(),
                        i.kind.clone(),
                        i.kernel_version.clone(),
                        format!("{:.1} MiB", i.size_bytes as f64 / (1024.0 * 1024.0)),
                        i.hosts.join(","),
                    ]
                }),
            );
        }
    }
    Ok(())
}
