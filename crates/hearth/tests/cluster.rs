//! Many hosts, as real processes: `hearth up` is the manager (with its own local agent), and
//! more agents run as `hearth agent` processes.
//!
//! - Survival: `kill -9` of an agent leaves its VM running; the agent restarted on its data
//!   dir takes the VM over (the same QEMU), and exec works again. The agent and its QEMU
//!   both gone: the VM is `unknown`, then `lost`; the manager keeps serving; when the agent
//!   returns, the VM is started again, once.
//! - Placement and drain: host labels constrain where VMs go; a drain moves what can move
//!   and says why the rest stays.
//!
//! Every process started here is killed by PID when the test ends, pass or fail.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

mod common;

use common::{free_port, start_up, wait_for, Env, Proc, ReapVms};

fn start_agent(env: &Env, dir: &Path, token: Option<&str>) -> Proc {
    start_agent_with(env, dir, token, "127.0.0.1:0", &[])
}

/// `hearth agent` joining `env`'s manager, in `env`'s namespace, listening on `listen`.
fn start_agent_with(
    env: &Env,
    dir: &Path,
    token: Option<&str>,
    listen: &str,
    extra: &[&str],
) -> Proc {
    let mut args = vec![
        "agent",
        "--manager",
        &env.url,
        "--data-dir",
        dir.to_str().unwrap(),
        "--listen",
        listen,
    ];
    if let Some(t) = token {
        args.extend(["--join-token", t]);
    }
    args.extend(extra);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.with_extension("log"))
        .unwrap();
    Proc(
        env.cmd(&args)
            .env("HEARTH_ACCEL", "tcg")
            .env(
                "HEARTH_IMAGES_DIR",
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/hearth-test-images"),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap(),
    )
}

/// `kill -9`, and waits for the process to be gone.
fn kill9(mut p: Proc) {
    p.0.kill().unwrap();
    p.0.wait().unwrap();
}

fn qemu_pid(run_dir: &Path) -> i32 {
    std::fs::read_to_string(run_dir.join("qemu.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// The host's status; empty while the manager does not know it yet.
fn host_status(env: &Env, id: &str) -> String {
    let out = env.run(&["--json", "host", "get", id]);
    serde_json::from_slice::<serde_json::Value>(&out.stdout).map_or(String::new(), |h| {
        h["status"].as_str().unwrap_or_default().to_string()
    })
}

fn vm_state(env: &Env, name: &str) -> String {
    env.json(&["vm", "get", name])["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn hostname_in(env: &Env, vm: &str) -> String {
    env.ok(&["vm", "exec", vm, "--", "cat", "/proc/sys/kernel/hostname"])
}

#[test]
fn vms_survive_their_agent_and_a_lost_host_comes_back() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let _reap_up = ReapVms(data.join("agent"));
    let agent_dir = root.path().join("agent1");
    let _reap_agent = ReapVms(agent_dir.clone());
    let port = free_port();
    let _up = start_up(&data, port, Some("survival-password"));
    let env = Env::new(format!("http://127.0.0.1:{port}"));
    assert!(env
        .with_stdin(&["login", "--password-stdin"], "survival-password\n")
        .status
        .success());
    let token = env.ok(&["host", "join-token"]).trim().to_string();
    let agent = start_agent(&env, &agent_dir, Some(&token));
    let host = joined_host(&env, &agent_dir);

    let vm = env.json(&[
        "vm",
        "create",
        "sv1",
        "--host",
        &host,
        "--wait",
        "--timeout",
        "200",
    ]);
    assert_eq!(vm["state"], "running", "{vm}");
    assert_eq!(vm["host_id"], host.as_str());
    let id = vm["id"].as_str().unwrap().to_string();
    let run_dir = agent_dir.join("run").join("vms").join(&id);
    let pid = qemu_pid(&run_dir);
    env.ok(&[
        "vm",
        "exec",
        "sv1",
        "--",
        "sh",
        "-c",
        "echo before > /tmp/mark",
    ]);

    // kill -9 the agent: its VM runs on, and shows `unknown` once the host is down.
    kill9(agent);
    wait_for("the host down", Duration::from_secs(30), || {
        host_status(&env, &host) == "down"
    });
    assert!(alive(pid), "the VM's QEMU must outlive its agent");
    assert_eq!(vm_state(&env, "sv1"), "unknown");
    let reason = env.json(&["vm", "get", "sv1"])["reason"].clone();
    assert!(
        reason.as_str().unwrap_or("").contains("heartbeat"),
        "{reason}"
    );
    // The manager keeps serving the rest.
    assert!(
        env.json(&["host", "list"])["items"]
            .as_array()
            .unwrap()
            .len()
            == 2
    );

    // The agent restarted on its data dir (no token): it takes the same QEMU over, and the
    // guest answers again with what it had in memory.
    let agent = start_agent(&env, &agent_dir, None);
    wait_for("the host up again", Duration::from_secs(60), || {
        host_status(&env, &host) == "up"
    });
    wait_for("the VM running again", Duration::from_secs(60), || {
        vm_state(&env, "sv1") == "running"
    });
    assert_eq!(qemu_pid(&run_dir), pid, "the same QEMU, not a new boot");
    wait_for("exec after the take-over", Duration::from_secs(60), || {
        env.run(&["vm", "exec", "sv1", "--", "cat", "/tmp/mark"])
            .stdout
            .starts_with(b"before")
    });
    assert_eq!(hostname_in(&env, "sv1").trim(), "sv1");

    // The host goes away with its VM: unknown, then lost after the bound.
    kill9(agent);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for("the VM lost", Duration::from_secs(60), || {
        vm_state(&env, "sv1") == "lost"
    });
    assert!(!alive(pid));

    // It returns: the VM should run, so it boots again there, once.
    let _agent = start_agent(&env, &agent_dir, None);
    wait_for(
        "a new QEMU for the lost VM",
        Duration::from_secs(200),
        || {
            std::fs::read_to_string(run_dir.join("qemu.pid"))
                .is_ok_and(|p| p.trim().parse() != Ok(pid))
        },
    );
    let new_pid = qemu_pid(&run_dir);
    assert!(alive(new_pid));
    wait_for(
        "the lost VM running again",
        Duration::from_secs(200),
        || vm_state(&env, "sv1") == "running",
    );
    wait_for("exec after the reboot", Duration::from_secs(60), || {
        env.run(&["vm", "exec", "sv1", "--", "true"])
            .status
            .success()
    });
    // A new boot: /tmp is empty again.
    assert!(!env
        .run(&["vm", "exec", "sv1", "--", "cat", "/tmp/mark"])
        .status
        .success());
    let vms = env.json(&["vm", "list"]);
    let named: Vec<_> = vms["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["name"] == "sv1")
        .collect();
    assert_eq!(named.len(), 1, "no duplicate: {vms}");
    env.ok(&["vm", "delete", "sv1"]);
}

/// The host id an agent process chose, once it has joined.
fn joined_host(env: &Env, dir: &Path) -> String {
    wait_for("the agent's identity", Duration::from_secs(60), || {
        dir.join("identity.json").exists()
    });
    let identity: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("identity.json")).unwrap()).unwrap();
    let host = identity["host_id"].as_str().unwrap().to_string();
    wait_for("the agent's host up", Duration::from_secs(60), || {
        host_status(env, &host) == "up"
    });
    host
}

#[test]
fn labels_place_vms_and_a_drain_moves_what_can_move() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let _reap_up = ReapVms(data.join("agent"));
    let (dir_a, dir_b) = (root.path().join("a"), root.path().join("b"));
    let _reap_a = ReapVms(dir_a.clone());
    let _reap_b = ReapVms(dir_b.clone());
    let port = free_port();
    let _up = start_up(&data, port, Some("drain-password"));
    let env = Env::new(format!("http://127.0.0.1:{port}"));
    assert!(env
        .with_stdin(&["login", "--password-stdin"], "drain-password\n")
        .status
        .success());
    let token = env.ok(&["host", "join-token"]).trim().to_string();
    let _a = start_agent_with(
        &env,
        &dir_a,
        Some(&token),
        "127.0.0.1:0",
        &["--label", "zone=a"],
    );
    let _b = start_agent_with(
        &env,
        &dir_b,
        Some(&token),
        "127.0.0.1:0",
        &["--label", "zone=b,disk=ssd"],
    );
    let (a, b) = (joined_host(&env, &dir_a), joined_host(&env, &dir_b));
    let hb = env.json(&["host", "get", &b]);
    assert_eq!(
        hb["labels"],
        serde_json::json!({"zone": "b", "disk": "ssd"}),
        "{hb}"
    );
    assert!(env.ok(&["host", "get", &a]).contains("zone=a"));

    // A label constraint places the VM; one no host has is refused with the reason.
    let m2 = env.json(&[
        "vm",
        "create",
        "m2",
        "--host-label",
        "zone=b",
        "--disk",
        "0",
        "--wait",
    ]);
    assert_eq!(m2["host_id"], b.as_str(), "{m2}");
    assert_eq!(m2["host_labels"], serde_json::json!({"zone": "b"}));
    let out = env.run(&[
        "vm",
        "create",
        "m9",
        "--host-label",
        "zone=c",
        "--disk",
        "0",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lacks the label zone=c"), "{err}");
    let out = env.run(&["vm", "create", "m9", "--host-label", "zone"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("KEY=VALUE"));
    assert!(
        !env.ok(&["vm", "list"]).contains("m9"),
        "nothing half-created"
    );

    // On host b: a diskless VM pinned there (it may move), and one with its own disk.
    let m1 = env.json(&["vm", "create", "m1", "--host", &b, "--disk", "0", "--wait"]);
    assert_eq!(m1["state"], "running", "{m1}");
    env.json(&["vm", "create", "m3", "--host", &b, "--no-start"]);

    let r = env.json(&["host", "drain", &b]);
    assert_eq!(r["host"]["status"], "cordoned", "{r}");
    let moved = r["moved"].as_array().unwrap();
    assert_eq!(moved.len(), 1, "{r}");
    assert_eq!(moved[0]["vm"], "m1");
    assert_ne!(moved[0]["to_host"], b.as_str());
    let stayed: std::collections::BTreeMap<String, String> = r["stayed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["vm"].as_str().unwrap().into(),
                s["reason"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(stayed["m2"].contains("zone=b"), "{stayed:?}");
    assert!(stayed["m3"].contains("disk"), "{stayed:?}");

    // m1 runs on its new host, and answers.
    let m1 = env.json(&["vm", "get", "m1"]);
    assert_ne!(m1["host_id"], b.as_str());
    wait_for(
        "m1 running on its new host",
        Duration::from_secs(200),
        || vm_state(&env, "m1") == "running",
    );
    assert_eq!(hostname_in(&env, "m1").trim(), "m1");
    assert!(!dir_b
        .join("run")
        .join("vms")
        .join(m1["id"].as_str().unwrap())
        .exists());
    // A cordoned host takes no new VM, even one that asks for its label.
    let out = env.run(&[
        "vm",
        "create",
        "m4",
        "--host-label",
        "zone=b",
        "--disk",
        "0",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cordoned"));
    for vm in ["m1", "m2", "m3"] {
        env.ok(&["vm", "delete", vm]);
    }
}

/// A fresh database on the suite's PostgreSQL (`make test` starts it).
fn fresh_postgres_url() -> String {
    use sqlx::Connection;
    let admin = std::env::var("HEARTH_TEST_POSTGRES_URL").expect(
        "HEARTH_TEST_POSTGRES_URL is not set: run the suite with `make test`, which starts a \
         PostgreSQL server for it",
    );
    let name = format!("hearth_test_{}", hearth_types::new_id().replace('-', ""));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
    });
    let (base, _) = admin.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

/// Managers sharing a database share the secrets key (it seals the cluster CA's key too).
const SHARED_SECRETS_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// `hearth manager` on `data`, run by `hearth` (see [`Env::bin`]), listening on `listen`,
/// with the tests' heartbeat bounds; its log goes beside the data dir.
fn spawn_manager(
    mut hearth: std::process::Command,
    data: &Path,
    listen: &str,
    password: &str,
    extra: &[&str],
) -> Proc {
    std::fs::create_dir_all(data).unwrap();
    Proc(
        hearth
            .args(["manager", "--data-dir", data.to_str().unwrap()])
            .args(["--listen", listen])
            .args(extra)
            .env("HEARTH_ADMIN_PASSWORD", password)
            .env("HEARTH_HEARTBEAT_INTERVAL_MS", "300")
            .env("HEARTH_HOST_DOWN_AFTER_MS", "2000")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(data.with_extension("log")).unwrap(),
            ))
            .spawn()
            .unwrap(),
    )
}

/// `hearth manager` alone, on a shared database. It serves HTTPS, as it does by default.
fn start_manager(data: &Path, port: u16, db: &str, password: &str) -> Proc {
    let mut hearth = std::process::Command::new(common::BIN);
    hearth.env("HEARTH_SECRETS_KEY", SHARED_SECRETS_KEY);
    let p = spawn_manager(
        hearth,
        data,
        &format!("127.0.0.1:{port}"),
        password,
        &["--database-url", db],
    );
    // It writes its CA after binding, just before it serves.
    wait_for("a manager to answer", Duration::from_secs(60), || {
        data.join("ca.pem").exists() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    p
}

/// The times (ms) at which a schedule's runs were claimed, read from the database.
fn scheduled_runs(db: &str) -> Vec<i64> {
    use sqlx::{Connection, Row};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut conn = sqlx::PgConnection::connect(db).await.unwrap();
        sqlx::query(
            "SELECT created_at FROM invocations WHERE schedule_id IS NOT NULL ORDER BY created_at",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<i64, _>("created_at"))
        .collect()
    })
}

/// Two `hearth manager`s on one PostgreSQL, both serving TLS, and an agent that knows both.
/// One is killed: the other serves, the agent's host stays up, and a schedule that ran
/// through the kill ran once per period, never twice.
#[test]
fn two_managers_share_one_database_and_an_agent_outlives_one() {
    let root = tempfile::tempdir().unwrap();
    let db = fresh_postgres_url();
    let agent_dir = root.path().join("agent");
    let _reap = ReapVms(agent_dir.clone());
    let (p1, p2) = (free_port(), free_port());
    let m1 = start_manager(&root.path().join("m1"), p1, &db, "two-managers");
    let _m2 = start_manager(&root.path().join("m2"), p2, &db, "two-managers");
    let ca = |m: &str| root.path().join(m).join("ca.pem");
    // One CA for the cluster, whichever manager wrote it out.
    assert_eq!(
        std::fs::read_to_string(ca("m1")).unwrap(),
        std::fs::read_to_string(ca("m2")).unwrap()
    );
    // Plain HTTP gets no answer from a manager serving TLS.
    assert!(!common::http_get(p1, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200")));
    let login = |port: u16, ca: Option<&Path>| {
        let env = Env::new(format!("https://127.0.0.1:{port}"));
        let mut args = vec!["login", "--password-stdin"];
        if let Some(ca) = ca {
            args.extend(["--ca-cert", ca.to_str().unwrap()]);
        }
        let out = env.with_stdin(&args, "two-managers\n");
        (env, out)
    };
    // Without the CA, the CLI says what to do.
    let (_, out) = login(p1, None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--ca-cert"), "{err}");
    let (e1, out) = login(p1, Some(&ca("m1")));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (e2, out) = login(p2, Some(&ca("m1")));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The join token pins the CA: with its fingerprint altered, the agent refuses the
    // manager before it sends the token, and nothing joins.
    let token = e1.ok(&["host", "join-token"]).trim().to_string();
    let (secret, fp) = token
        .split_once('.')
        .expect("the token carries the CA's fingerprint");
    assert_eq!(fp.len(), 64, "{token}");
    let forged = format!("{secret}.{}", "0".repeat(64));
    let managers = format!("{},{}", e1.url, e2.url);
    let agent_env = Env::new(managers);
    let bad_dir = root.path().join("bad-agent");
    let mut bad = start_agent(&agent_env, &bad_dir, Some(&forged));
    let status = bad.0.wait().unwrap();
    assert!(!status.success());
    let log = std::fs::read_to_string(bad_dir.with_extension("log")).unwrap();
    assert!(log.contains("fingerprint"), "{log}");
    let hosts = e1.json(&["host", "list"]);
    assert_eq!(hosts["items"].as_array().unwrap().len(), 0, "{hosts}");

    // A token from one manager; the agent knows both.
    let _agent = start_agent(&agent_env, &agent_dir, Some(&token));
    let host = joined_host(&e2, &agent_dir);
    assert!(agent_dir.join("manager-ca.pem").exists());

    // Made through one manager, used through the other.
    let vm = e1.json(&[
        "vm",
        "create",
        "mm1",
        "--disk",
        "0",
        "--wait",
        "--timeout",
        "200",
    ]);
    assert_eq!(vm["state"], "running", "{vm}");
    assert_eq!(vm["host_id"], host.as_str());
    assert_eq!(hostname_in(&e2, "mm1").trim(), "mm1");

    // A schedule every 2 s, which both managers look at every second.
    let code = root.path().join("tick.sh");
    std::fs::write(&code, "#!/bin/sh\nread -r ev\nprintf '{\"tick\":true}'\n").unwrap();
    e1.ok(&[
        "fn",
        "deploy",
        "tick",
        "--runtime",
        "native",
        "--code",
        code.to_str().unwrap(),
    ]);
    let sid = e1.ok(&["fn", "schedule", "add", "tick", "@every 2s"]);
    wait_for("two scheduled runs", Duration::from_secs(30), || {
        scheduled_runs(&db).len() >= 2
    });

    // The first manager dies: the other serves, and the agent heartbeats to it, so its host
    // never goes down.
    kill9(m1);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(host_status(&e2, &host), "up");
    assert_eq!(vm_state(&e2, "mm1"), "running");
    assert_eq!(hostname_in(&e2, "mm1").trim(), "mm1");
    let stopped = e2.json(&["vm", "stop", "mm1"]);
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    e2.ok(&["vm", "delete", "mm1"]);
    assert!(!e2.ok(&["vm", "list"]).contains("mm1"));

    // The schedule went on through the kill, once per period.
    let before = scheduled_runs(&db).len();
    wait_for(
        "the schedule to run on the survivor",
        Duration::from_secs(30),
        || scheduled_runs(&db).len() >= before + 2,
    );
    e2.ok(&["fn", "schedule", "delete", "tick", sid.trim()]);
    let runs = scheduled_runs(&db);
    let gaps: Vec<i64> = runs.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| *g >= 1000),
        "a run was claimed twice (gaps between claims, ms: {gaps:?})"
    );
    let span = runs.last().unwrap() - runs.first().unwrap();
    assert!(
        runs.len() as i64 <= span / 2000 + 2,
        "{} runs in {span} ms of a 2 s schedule",
        runs.len()
    );
    // And the runs ran.
    wait_for(
        "a scheduled run to finish",
        Duration::from_secs(120),
        || {
            e2.json(&["fn", "logs", "tick"])["items"]
                .as_array()
                .is_some_and(|i| i.iter().any(|i| i["output"]["tick"] == true))
        },
    );
    // The dead manager's pool VM is removed by the survivor; the survivor's stays.
    wait_for("one manager's pool VMs", Duration::from_secs(90), || {
        let vms = e2.json(&["vm", "list"]);
        let owners: std::collections::HashSet<String> = vms["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v["name"].as_str()?.strip_prefix("fn-tick-"))
            .filter_map(|rest| Some(rest.split_once('-')?.0.to_string()))
            .collect();
        owners.len() == 1
    });
    e2.ok(&["fn", "delete", "tick"]);
}

#[path = "../../hearth-manager/tests/common/netns.rs"]
#[allow(dead_code)]
mod netns;

/// The manager and two agents, each in a network namespace of its own with its own address,
/// linked only to the manager's: they join over TLS, each runs a VM the manager reaches
/// through it, and an agent `kill -9`ed in its namespace takes its VM over again.
#[test]
fn agents_in_network_namespaces_of_their_own() {
    let root = tempfile::tempdir().unwrap();
    let (m, a1, a2) = (
        netns::Netns::new("mgr"),
        netns::Netns::new("ag1"),
        netns::Netns::new("ag2"),
    );
    m.link(&a1, "10.231.1.1/30", "10.231.1.2/30");
    m.link(&a2, "10.231.2.1/30", "10.231.2.2/30");
    let (d1, d2) = (root.path().join("a1"), root.path().join("a2"));
    let (_reap1, _reap2) = (ReapVms(d1.clone()), ReapVms(d2.clone()));
    let mdata = root.path().join("m");
    let cli = Env::in_netns(&m.name, "https://127.0.0.1:18080");
    let _manager = spawn_manager(cli.bin(), &mdata, "0.0.0.0:18080", "in-namespaces", &[]);
    let ca = mdata.join("ca.pem");
    wait_for("the manager", Duration::from_secs(60), || {
        ca.exists()
            && cli
                .with_stdin(
                    &[
                        "login",
                        "--password-stdin",
                        "--ca-cert",
                        ca.to_str().unwrap(),
                    ],
                    "in-namespaces\n",
                )
                .status
                .success()
    });
    let token = cli.ok(&["host", "join-token"]).trim().to_string();
    // Each agent reaches the manager at its own link's address.
    let in_a1 = Env::in_netns(&a1.name, "https://10.231.1.1:18080");
    let in_a2 = Env::in_netns(&a2.name, "https://10.231.2.1:18080");
    let agent1 = start_agent_with(&in_a1, &d1, Some(&token), "10.231.1.2:18081", &[]);
    let _agent2 = start_agent_with(&in_a2, &d2, Some(&token), "10.231.2.2:18081", &[]);
    let (h1, h2) = (joined_host(&cli, &d1), joined_host(&cli, &d2));
    assert_eq!(
        cli.json(&["host", "get", &h1])["address"],
        "https://10.231.1.2:18081"
    );
    assert_eq!(
        cli.json(&["host", "get", &h2])["address"],
        "https://10.231.2.2:18081"
    );

    // A VM on each host, reached through its own agent.
    for (name, host) in [("nsvm1", &h1), ("nsvm2", &h2)] {
        let vm = cli.json(&[
            "vm",
            "create",
            name,
            "--host",
            host,
            "--disk",
            "0",
            "--wait",
            "--timeout",
            "200",
        ]);
        assert_eq!(vm["state"], "running", "{vm}");
        let out = cli.ok(&["vm", "exec", name, "--", "cat", "/proc/sys/kernel/hostname"]);
        assert_eq!(out.trim(), name);
    }

    // kill -9 the first agent in its namespace; restarted there, it takes its VM over.
    let id1 = cli.json(&["vm", "get", "nsvm1"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let pid = qemu_pid(&d1.join("run").join("vms").join(&id1));
    kill9(agent1);
    assert!(alive(pid));
    let _agent1 = start_agent_with(&in_a1, &d1, None, "10.231.1.2:18081", &[]);
    wait_for(
        "exec through the restarted agent",
        Duration::from_secs(120),
        || {
            cli.cmd(&["vm", "exec", "nsvm1", "--", "true"])
                .output()
                .is_ok_and(|o| o.status.success())
        },
    );
    assert_eq!(qemu_pid(&d1.join("run").join("vms").join(&id1)), pid);
    for name in ["nsvm1", "nsvm2"] {
        cli.ok(&["vm", "delete", name]);
    }
}
