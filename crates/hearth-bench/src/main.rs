//! `make bench`: boots real guests and prints the ratios PRODUCT.md holds Hearth to, each
//! against its baseline measured in the same run on the same machine:
//!
//! - VM cold start through the API (create → `wait` answers `running`, i.e. the guest agent
//!   answered) against a raw QEMU boot of the same kernel and initramfs until the same guest
//!   agent answers on its channel;
//! - `exec true` through the API against the same request sent straight over a guest channel;
//! - host memory per idle VM beyond its guest's used RAM (QEMU's RSS), reported;
//! - N VMs started at once: the slowest against one started alone.
//!
//! Medians of `HEARTH_BENCH_RUNS` runs (default 5). Timings on a shared 2-core machine are
//! noisy; read the ratios, not single numbers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine;
use hearth_agent::accel::AccelMode;
use hearth_guest_proto::client::GuestClient;
use hearth_guest_proto::msg::Request;
use hearth_manager::{Application, ManagerConfig};
use hearth_vmm::qemu::Qemu;
use hearth_vmm::{Accel, Hypervisor, VmConfig};
use serde_json::{json, Value};

const PASSWORD: &str = "bench-password";

struct Api {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!("{path}: {status} {text}");
        }
        Ok(if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        })
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// One raw QEMU boot: a fresh disk as Hearth gives each VM (an empty sparse ext4), then
/// launch until the guest agent completes its handshake.
async fn raw_boot(
    qemu: &Qemu,
    cfg: &VmConfig,
) -> anyhow::Result<(Duration, hearth_vmm::Launched, GuestClient)> {
    let t0 = Instant::now();
    if let Some(disk) = &cfg.disk {
        std::fs::create_dir_all(disk.parent().context("disk dir")?)?;
        let _ = std::fs::remove_file(disk);
        let ok = tokio::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1"])
            .arg(disk)
            .arg("1024M")
            .output()
            .await?
            .status
            .success();
        anyhow::ensure!(ok, "mkfs.ext4 failed");
    }
    let vm = qemu.launch(cfg).await?;
    let io = vm.control.guest_stream().await?;
    let guest = GuestClient::connect(io, Duration::from_secs(120)).await?;
    Ok((t0.elapsed(), vm, guest))
}

async fn stop_raw(vm: hearth_vmm::Launched) {
    vm.control.kill();
    let _ = tokio::time::timeout(Duration::from_secs(10), vm.exit).await;
}

async fn api_boot(api: &Api, name: &str) -> anyhow::Result<(Duration, String)> {
    let t0 = Instant::now();
    let vm = create_running(
        api,
        json!({"name": name, "memory_mib": 256, "network": "none"}),
    )
    .await?;
    Ok((
        t0.elapsed(),
        vm["id"].as_str().context("vm id")?.to_string(),
    ))
}

/// Creates a VM from `body` and waits until it runs; returns it as created.
async fn create_running(api: &Api, body: Value) -> anyhow::Result<Value> {
    let vm = api
        .call(reqwest::Method::POST, "/v1/vms", Some(body))
        .await?;
    let id = vm["id"].as_str().context("vm id")?;
    api.call(
        reqwest::Method::GET,
        &format!("/v1/vms/{id}/wait?state=running&timeout_s=300"),
        None,
    )
    .await?;
    Ok(vm)
}

/// A process's resident set, in MiB (0 when it cannot be read).
fn resident_mib(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{}/status", pid.trim()))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// Bytes a file takes on disk (a sparse file takes only what was written).
fn allocated(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map_or(0, |m| m.blocks() * 512)
}

/// A network namespace for the bench's managed network, deleted when dropped.
struct Netns(String);

impl Netns {
    fn new() -> Option<Netns> {
        let name = format!("hearth-bench-{}", hearth_types::short_suffix());
        let ok = |args: &[&str]| {
            std::process::Command::new("ip")
                .args(args)
                .output()
                .is_ok_and(|o| o.status.success())
        };
        (ok(&["netns", "add", &name]) && ok(&["-n", &name, "link", "set", "lo", "up"]))
            .then_some(Netns(name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .output();
    }
}

/// Round trips of one byte over one TCP connection to `addr`, made from the network
/// namespace `netns` (None: this one), on a thread of its own.
async fn round_trips(
    netns: Option<String>,
    addr: std::net::SocketAddr,
    n: usize,
) -> anyhow::Result<Vec<Duration>> {
    tokio::task::spawn_blocking(move || {
        // A fresh thread: entering a namespace must not leak into the runtime's pool.
        std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
            use std::io::{Read, Write};
            if let Some(ns) = netns {
                let f = std::fs::File::open(format!("/run/netns/{ns}"))?;
                nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)?;
            }
            // The guest's echo server may take a moment to listen.
            let mut s = (0..50)
                .find_map(|_| {
                    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                        .ok()
                        .or_else(|| {
                            std::thread::sleep(Duration::from_millis(100));
                            None
                        })
                })
                .with_context(|| format!("connecting to {addr}"))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut out = Vec::with_capacity(n);
            let mut b = [0u8; 1];
            for i in 0..n + 10 {
                let t0 = Instant::now();
                s.write_all(b"x")?;
                s.read_exact(&mut b)?;
                if i >= 10 {
                    out.push(t0.elapsed()); // the first ten warm up
                }
            }
            Ok(out)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("round trip thread panicked"))?
    })
    .await?
}

/// Kills the QEMUs left in an agent's run dirs when dropped.
struct ReapVms(std::path::PathBuf);

impl Drop for ReapVms {
    fn drop(&mut self) {
        hearth_agent::vm::reap_leftovers(&self.0);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::var("HEARTH_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let parallel: usize = std::env::var("HEARTH_BENCH_PARALLEL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
        .max(1);
    let dir = tempfile::tempdir()?;
    // Managed networks are built in a namespace of the bench's own, never on the host's.
    let netns = Netns::new();

    // A manager and an agent in this process, on loopback, as `hearth up` runs them.
    let mut config = ManagerConfig::for_data_dir(dir.path());
    config.admin_password = Some(PASSWORD.to_string().into());
    config.heartbeat_interval_ms = 1000;
    // N VMs at once on a small host is an overcommit by design.
    config.cpu_overcommit = config.cpu_overcommit.max(parallel as f64);
    let app = Application::build(config).await?;
    let url = app.url();
    let token = app
        .app()
        .issue_join_token("bench", 10)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stop_rx.await;
    }));
    let accel_mode: AccelMode = std::env::var("HEARTH_ACCEL")
        .unwrap_or_else(|_| "tcg".into())
        .parse()
        .map_err(anyhow::Error::msg)?;
    // VMs outlive their agent: whatever way this ends, none is left running.
    let _reap = ReapVms(dir.path().join("agent").join("run").join("vms"));
    let agent = hearth_agent::start(hearth_agent::AgentConfig {
        manager_url: url.clone(),
        join_token: Some(token.token.into()),
        data_dir: dir.path().join("agent"),
        // Runtime images are slow to build: share the test suite's cache.
        images_dir: Some(std::env::var_os("HEARTH_IMAGES_DIR").map_or_else(
            || {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../../target/hearth-test-images")
            },
            std::path::PathBuf::from,
        )),
        listen: "127.0.0.1:0".parse()?,
        advertise: None,
        manager_ca: None,
        boot_timeout: Duration::from_secs(300),
        accel: accel_mode,
        manage_networks: netns.is_some(),
        netns: netns.as_ref().map(|n| n.0.clone()),
        labels: Default::default(),
    })
    .await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;
    let login: Value = http
        .post(format!("{url}/v1/auth/login"))
        .json(&json!({"username": "admin", "password": PASSWORD}))
        .send()
        .await?
        .json()
        .await?;
    let api = Api {
        http,
        url,
        token: login["token"].as_str().context("login")?.to_string(),
    };
    for _ in 0..100 {
        let imgs = api.call(reqwest::Method::GET, "/v1/images", None).await?;
        if imgs["items"].as_array().is_some_and(|i| !i.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let image = hearth_agent::image::build_default(&dir.path().join("agent").join("images"))?;
    let qemu = Qemu {
        binary: hearth_vmm::VmmKind::Qemu
            .locate()
            .context("qemu-system-x86_64 is not installed")?,
    };
    let accel = if accel_mode == AccelMode::Kvm {
        Accel::Kvm
    } else {
        Accel::Tcg
    };
    let raw_cfg = |i: usize| VmConfig {
        kernel: image.kernel.clone(),
        initrd: image.initrd.clone(),
        rootfs: None,
        disk: Some(dir.path().join("raw").join(i.to_string()).join("disk.ext4")),
        incoming: None,
        volumes: vec![],
        user_net: None,
        tap: None,
        vcpus: 1,
        memory_mib: 256,
        accel,
        hostname: format!("raw{i}"),
        run_dir: dir.path().join("raw").join(i.to_string()),
    };
    eprintln!("accelerator: {}, {runs} runs each", accel.name());

    // Cold start, alternating so drift in the machine's load hits both sides alike.
    let (mut raw, mut via_api) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let (d, vm, _g) = raw_boot(&qemu, &raw_cfg(i)).await?;
        stop_raw(vm).await;
        raw.push(d);
        let (d, id) = api_boot(&api, &format!("cold{i}")).await?;
        api.call(reqwest::Method::DELETE, &format!("/v1/vms/{id}"), None)
            .await?;
        via_api.push(d);
        eprintln!(
            "  cold start {i}: raw {} api {}",
            ms(raw[i]),
            ms(via_api[i])
        );
    }
    let (raw_cold, api_cold) = (median(raw), median(via_api));

    // Exec `true`: through the API against straight over the channel, on warm guests.
    let (_, raw_vm, guest) = raw_boot(&qemu, &raw_cfg(1000)).await?;
    let (_, id) = api_boot(&api, "exec").await?;
    let req = Request::Exec {
        argv: vec!["true".into()],
        env: BTreeMap::new(),
        cwd: None,
        timeout_ms: 0,
        pty: None,
    };
    let n = 30;
    let (mut direct, mut through) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        guest.exec(&req, b"", 1024).await?;
        direct.push(t.elapsed());
        let t = Instant::now();
        api.call(
            reqwest::Method::POST,
            &format!("/v1/vms/{id}/exec"),
            Some(json!({"command": ["true"]})),
        )
        .await?;
        through.push(t.elapsed());
    }
    let (exec_direct, exec_api) = (median(direct), median(through));
    eprintln!(
        "  exec true: direct {} api {}",
        ms(exec_direct),
        ms(exec_api)
    );

    // Snapshots: restore → guest answering, against the cold start above.
    let snap = api
        .call(
            reqwest::Method::POST,
            &format!("/v1/vms/{id}/snapshots"),
            Some(json!({"name": "bench"})),
        )
        .await?;
    let mut restores = Vec::new();
    for i in 0..runs {
        let t = Instant::now();
        let vm = api
            .call(
                reqwest::Method::POST,
                "/v1/snapshots/bench/restore",
                Some(json!({"name": format!("restored{i}")})),
            )
            .await?;
        let rid = vm["id"].as_str().context("vm id")?.to_string();
        api.call(
            reqwest::Method::GET,
            &format!("/v1/vms/{rid}/wait?state=running&timeout_s=300"),
            None,
        )
        .await?;
        restores.push(t.elapsed());
        api.call(reqwest::Method::DELETE, &format!("/v1/vms/{rid}"), None)
            .await?;
    }
    let restore = median(restores);
    eprintln!(
        "  restore: {} (snapshot {} ms paused)",
        ms(restore),
        snap["save_ms"]
    );
    api.call(reqwest::Method::DELETE, "/v1/snapshots/bench", None)
        .await?;
    // Snapshot size and save time by guest memory.
    let mut sizes = Vec::new();
    for mib in [128u64, 256, 512] {
        let vm = api
            .call(
                reqwest::Method::POST,
                "/v1/vms",
                Some(json!({"name": format!("size{mib}"), "memory_mib": mib})),
            )
            .await?;
        let vid = vm["id"].as_str().context("vm id")?.to_string();
        api.call(
            reqwest::Method::GET,
            &format!("/v1/vms/{vid}/wait?state=running&timeout_s=300"),
            None,
        )
        .await?;
        let s = api
            .call(
                reqwest::Method::POST,
                &format!("/v1/vms/{vid}/snapshots"),
                Some(json!({})),
            )
            .await?;
        sizes.push((
            mib,
            s["save_ms"].as_u64().unwrap_or(0),
            s["memory_bytes"].as_u64().unwrap_or(0),
            s["disk_bytes"].as_u64().unwrap_or(0),
        ));
        api.call(
            reqwest::Method::DELETE,
            &format!("/v1/vms/{vid}?snapshots=true"),
            None,
        )
        .await?;
    }

    // Memory: QEMU's resident set against what the idle guest itself uses.
    let m = api
        .call(reqwest::Method::GET, &format!("/v1/vms/{id}/metrics"), None)
        .await?;
    let guest_used_mib = m["memory_used_mib"].as_f64().unwrap_or(0.0);
    let qemu_pid = |id: &str| {
        std::fs::read_to_string(dir.path().join("agent/run/vms").join(id).join("qemu.pid"))
            .unwrap_or_default()
    };
    let rss_mib = resident_mib(&qemu_pid(&id));
    api.call(reqwest::Method::DELETE, &format!("/v1/vms/{id}"), None)
        .await?;

    // Functions: the same handler through the API (warm and cold) and straight over a
    // guest channel.
    const HANDLER: &str = "#!/bin/sh\nread -r ev\nprintf '{\"ok\":%s}' \"$ev\"\n";
    api.call(
        reqwest::Method::POST,
        "/v1/functions",
        Some(json!({"name": "bench", "runtime": "native", "code": HANDLER, "max_instances": 4})),
    )
    .await?;
    let t = Instant::now();
    api.call(
        reqwest::Method::POST,
        "/v1/functions/bench/invoke",
        Some(json!({"n": 0})),
    )
    .await?;
    let fn_cold = t.elapsed();
    let mut warm = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        let r = api
            .call(
                reqwest::Method::POST,
                "/v1/functions/bench/invoke",
                Some(json!({"n": i})),
            )
            .await?;
        warm.push(t.elapsed());
        if r["output"]["ok"]["n"] != i {
            bail!("unexpected output {r}");
        }
    }
    let fn_warm = median(warm);
    guest
        .call(&Request::WriteFile {
            path: "/code/handler".into(),
            data: base64::engine::general_purpose::STANDARD.encode(HANDLER),
            mode: 0o755,
            append: false,
        })
        .await?;
    let call = Request::Exec {
        argv: vec!["/code/handler".into()],
        env: BTreeMap::new(),
        cwd: Some("/code".into()),
        timeout_ms: 30_000,
        pty: None,
    };
    let mut direct = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let out = guest.exec(&call, br#"{"n":1}"#, 1 << 20).await?;
        direct.push(t.elapsed());
        if out.code != 0 {
            bail!(
                "direct handler call failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let fn_direct = median(direct);
    eprintln!(
        "  function: cold {} warm {} direct {}",
        ms(fn_cold),
        ms(fn_warm),
        ms(fn_direct)
    );
    let mut throughput = Vec::new();
    for callers in [1usize, 4, 16] {
        let t = Instant::now();
        let per = 8;
        let work = (0..callers).map(|c| {
            let api = &api;
            async move {
                for i in 0..per {
                    api.call(
                        reqwest::Method::POST,
                        "/v1/functions/bench/invoke",
                        Some(json!({"c": c, "i": i})),
                    )
                    .await?;
                }
                anyhow::Ok(())
            }
        });
        for r in futures_util::future::join_all(work).await {
            r?;
        }
        let rate = (callers * per) as f64 / t.elapsed().as_secs_f64();
        eprintln!("  {callers} callers: {rate:.1} invocations/s");
        throughput.push((callers, rate));
    }
    api.call(reqwest::Method::DELETE, "/v1/functions/bench", None)
        .await?;
    stop_raw(raw_vm).await;

    // Process against persistent mode, for native and Python.
    const NATIVE_WORKER: &str = "#!/bin/sh\nwhile read -r l; do printf '\\036hearth-call-end\\n' >&2; echo '{\"ok\":1}'; done\n";
    const PYTHON: &str = "def handler(event, context):\n    return {'ok': event}\n";
    api.call(
        reqwest::Method::POST,
        "/v1/runtimes/python/build",
        Some(json!({})),
    )
    .await?;
    let built = Instant::now();
    loop {
        let rt = api
            .call(reqwest::Method::GET, "/v1/runtimes/python", None)
            .await?;
        if rt["available"] == true {
            break;
        }
        if rt["hosts"][0]["state"] == "failed" || built.elapsed() > Duration::from_secs(1800) {
            bail!("the python runtime did not build: {rt}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut modes = Vec::new();
    for (runtime, code, mode) in [
        ("native", HANDLER, "process"),
        ("native", NATIVE_WORKER, "persistent"),
        ("python", PYTHON, "process"),
        ("python", PYTHON, "persistent"),
    ] {
        let name = format!("{runtime}-{mode}");
        api.call(
            reqwest::Method::POST,
            "/v1/functions",
            Some(json!({"name": name, "runtime": runtime, "code": code, "mode": mode})),
        )
        .await?;
        let path = format!("/v1/functions/{name}/invoke");
        let t = Instant::now();
        let r = api
            .call(reqwest::Method::POST, &path, Some(json!(1)))
            .await?;
        let cold = t.elapsed();
        if !r["error"].is_null() {
            bail!("{name} failed: {r}");
        }
        let mut warm = Vec::new();
        for _ in 0..n {
            let t = Instant::now();
            api.call(reqwest::Method::POST, &path, Some(json!(1)))
                .await?;
            warm.push(t.elapsed());
        }
        let warm = median(warm);
        // The next cold start restores the snapshot the first one left.
        for vm in api.call(reqwest::Method::GET, "/v1/vms", None).await?["items"]
            .as_array()
            .context("vm list")?
        {
            if vm["function_id"].is_string() {
                api.call(
                    reqwest::Method::DELETE,
                    &format!("/v1/vms/{}", vm["id"].as_str().unwrap_or_default()),
                    None,
                )
                .await?;
            }
        }
        let t = Instant::now();
        let r = api
            .call(reqwest::Method::POST, &path, Some(json!(1)))
            .await?;
        let cold_snap = t.elapsed();
        if r["cold_start_from"] != "snapshot" {
            bail!("{name}'s second cold start did not restore its snapshot: {r}");
        }
        eprintln!(
            "  {name}: cold {} (from snapshot {}) warm {}",
            ms(cold),
            ms(cold_snap),
            ms(warm)
        );
        modes.push((runtime, mode, cold, warm, cold_snap));
        api.call(
            reqwest::Method::DELETE,
            &format!("/v1/functions/{name}"),
            None,
        )
        .await?;
    }

    // N at once against one alone (the median cold start above).
    let t0 = Instant::now();
    let boots = (0..parallel).map(|i| {
        let api = &api;
        async move { api_boot(api, &format!("par{i}")).await }
    });
    let results = futures_util::future::join_all(boots).await;
    let mut slowest = Duration::ZERO;
    let mut ids = Vec::new();
    for r in results {
        let (d, id) = r?;
        slowest = slowest.max(d);
        ids.push(id);
    }
    let all = t0.elapsed();
    // Host memory and disk with 1, 5 and 10 of them idle: QEMU's resident sets, this
    // process (the manager and the agent) once, and the VMs' own disks.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let files = hearth_agent::vm::files::Roots::new(&dir.path().join("agent"));
    let footprint: Vec<(usize, f64, f64)> = [1, 5, 10]
        .into_iter()
        .filter(|k| *k <= ids.len())
        .map(|k| {
            let qemu: f64 = ids[..k].iter().map(|id| resident_mib(&qemu_pid(id))).sum();
            let disk: u64 = ids[..k].iter().map(|id| allocated(&files.disk(id))).sum();
            (k, qemu, disk as f64 / 1048576.0)
        })
        .collect();
    let control_plane_mib = resident_mib(&std::process::id().to_string());
    for id in &ids {
        api.call(reqwest::Method::DELETE, &format!("/v1/vms/{id}"), None)
            .await?;
    }

    // Host ↔ guest round trips (one byte, TCP): over a TAP on a managed network, from the
    // agent's namespace to the guest's address, against QEMU's user-mode networking
    // through its loopback forward.
    let rtt = match &netns {
        Some(ns) => {
            let echo = "nc -ll -p 7777 -e cat </dev/null >/dev/null 2>&1 &";
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let mut ids = Vec::new();
            let mut addrs = Vec::new();
            for (name, body) in [
                (
                    "rtt-tap",
                    json!({"name": "rtt-tap", "network": "default", "disk_mib": 0}),
                ),
                (
                    "rtt-user",
                    json!({"name": "rtt-user", "network": "user", "disk_mib": 0,
                    "ports": [{"host_port": port, "guest_port": 7777}]}),
                ),
            ] {
                let vm = create_running(&api, body).await?;
                let id = vm["id"].as_str().context("vm id")?.to_string();
                api.call(
                    reqwest::Method::POST,
                    &format!("/v1/vms/{name}/exec"),
                    Some(json!({"command": ["sh", "-c", echo]})),
                )
                .await?;
                addrs.push(vm["ip"].as_str().unwrap_or_default().to_string());
                ids.push(id);
            }
            let n = 200 * runs;
            let tap =
                round_trips(Some(ns.0.clone()), format!("{}:7777", addrs[0]).parse()?, n).await?;
            let user = round_trips(None, ([127, 0, 0, 1], port).into(), n).await?;
            for id in &ids {
                api.call(reqwest::Method::DELETE, &format!("/v1/vms/{id}"), None)
                    .await?;
            }
            Some((median(tap), median(user)))
        }
        None => None,
    };

    agent.shutdown().await;
    let _ = stop_tx.send(());
    let _ = server.await;

    println!();
    println!(
        "Hearth benchmarks ({} accelerator, medians of {runs})",
        accel.name()
    );
    println!(
        "{:<52} {:>12} {:>12} {:>8} {:>7}",
        "what", "hearth", "baseline", "ratio", "goal"
    );
    let line = |what: &str, a: Duration, b: Duration, goal: &str| {
        println!(
            "{:<52} {:>12} {:>12} {:>7.3}x {:>7}",
            what,
            ms(a),
            ms(b),
            a.as_secs_f64() / b.as_secs_f64(),
            goal
        );
    };
    line(
        "VM cold start: API → guest answering / raw QEMU",
        api_cold,
        raw_cold,
        "≤1.15",
    );
    line(
        "exec `true`: API / straight over the guest channel",
        exec_api,
        exec_direct,
        "-",
    );
    line(
        &format!("{parallel} VMs at once: slowest / one alone"),
        slowest,
        api_cold,
        "report",
    );
    println!(
        "{:<52} {:>9.1} MiB (QEMU RSS {rss_mib:.1} MiB − guest used {guest_used_mib:.1} MiB; Firecracker publishes 5 MiB)",
        "host memory per idle VM beyond its guest's use",
        rss_mib - guest_used_mib
    );
    println!(
        "({parallel} VMs booted in {:.1} s in all)",
        all.as_secs_f64()
    );
    for (k, qemu, disk) in &footprint {
        println!(
            "{k:>2} idle VMs (256 MiB): QEMU RSS {qemu:.0} MiB ({:.1} per VM), + manager and agent {control_plane_mib:.0} MiB; VM disks {disk:.1} MiB ({:.2} per VM)",
            qemu / *k as f64,
            disk / *k as f64,
        );
    }
    match rtt {
        Some((tap, user)) => line(
            "host ↔ guest TCP round trip: TAP / user-mode",
            tap,
            user,
            "report",
        ),
        None => println!("host ↔ guest round trip: skipped (no network namespace: run as root)"),
    }
    line(
        "function warm invoke: API / straight over the channel",
        fn_warm,
        fn_direct,
        "≤1.2",
    );
    line(
        "function cold invoke / warm invoke (native)",
        fn_cold,
        fn_warm,
        "report",
    );
    let warm_of = |rt: &str, mode: &str| {
        modes
            .iter()
            .find(|m| m.0 == rt && m.1 == mode)
            .map(|m| (m.2, m.3, m.4))
            .expect("measured")
    };
    for rt in ["native", "python"] {
        let (_, process, _) = warm_of(rt, "process");
        let (cold, persistent, _) = warm_of(rt, "persistent");
        line(
            &format!("{rt} warm invoke: process / persistent mode"),
            process,
            persistent,
            "report",
        );
        line(
            &format!("{rt} cold invoke / warm invoke (persistent)"),
            cold,
            persistent,
            "report",
        );
    }
    for rt in ["native", "python"] {
        let (cold, _, cold_snap) = warm_of(rt, "persistent");
        line(
            &format!("{rt} cold invoke: from snapshot / from boot"),
            cold_snap,
            cold,
            "report",
        );
    }
    line(
        "VM restore from snapshot / cold start (→ answering)",
        restore,
        api_cold,
        "≤0.10",
    );
    for (mib, save_ms, memory, disk) in sizes {
        println!(
            "snapshot of a {mib:>3} MiB guest: paused {save_ms} ms, memory state {:.1} MiB, disk {:.1} MiB",
            memory as f64 / 1048576.0,
            disk as f64 / 1048576.0
        );
    }
    for (callers, rate) in throughput {
        println!("function throughput, {callers:>2} concurrent callers: {rate:.1} invocations/s (max_instances 4)");
    }
    Ok(())
}
