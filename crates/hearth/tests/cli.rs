//! The CLI against a running `hearth up` (a real process), with two more agents joining as
//! their own processes. Every process started here is killed by PID when the test ends,
//! pass or fail.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

use common::{free_port, start_up, wait_for, Env, Proc, ReapVms, BIN};

#[test]
fn cli_drives_a_running_hearth_up() {
    let root = tempfile::tempdir().unwrap();
    let data: PathBuf = root.path().join("data");
    let port = free_port();
    let _up = start_up(&data, port, None);
    let env = Env::new(format!("http://127.0.0.1:{port}"));

    // Not logged in yet: a clear error and a non-zero exit.
    let out = env.run(&["host", "list"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hearth login"), "{err}");

    // The generated admin password is in a private file in the data dir.
    let password = std::fs::read_to_string(data.join("admin-password")).unwrap();
    let out = env.with_stdin(&["login", "--password-stdin"], "wrong-password\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong username or password"));
    let out = env.with_stdin(&["login", "--password-stdin"], &password);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let creds = env.home.path().join(".config/hearth/credentials.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&creds).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(env.ok(&["whoami"]).contains("admin (admin)"));

    // The local agent of `hearth up` is a host, up.
    wait_for("the local agent", Duration::from_secs(30), || {
        env.json(&["host", "list"])["items"]
            .as_array()
            .is_some_and(|i| i.len() == 1)
    });
    let table = env.ok(&["host", "list"]);
    assert!(
        table.contains("STATUS") && table.contains(" up "),
        "{table}"
    );

    // Two more agents, as processes of their own, join with a token.
    let token = env.ok(&["host", "join-token"]).trim().to_string();
    assert!(token.starts_with("hj_"));
    let mut agents = Vec::new();
    for i in 0..2 {
        let dir = root.path().join(format!("agent{i}"));
        agents.push(Proc(
            env.cmd(&[
                "agent",
                "--manager",
                &env.url,
                "--join-token",
                &token,
                "--data-dir",
                dir.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        ));
    }
    wait_for("three hosts up", Duration::from_secs(30), || {
        let hosts = env.json(&["host", "list"]);
        let items = hosts["items"].as_array().cloned().unwrap_or_default();
        items.len() == 3 && items.iter().all(|h| h["status"] == "up")
    });
    let hosts = env.json(&["host", "list"]);
    let id = hosts["items"][1]["id"].as_str().unwrap().to_string();
    assert_eq!(env.json(&["host", "cordon", &id])["status"], "cordoned");
    assert_eq!(env.json(&["host", "get", &id])["cordoned"], true);
    assert!(env.ok(&["host", "get", &id]).contains("last heartbeat"));
    env.ok(&["host", "uncordon", &id]);

    // An agent that stops goes down.
    drop(agents.pop());
    wait_for("a host down", Duration::from_secs(30), || {
        let hosts = env.json(&["host", "list"]);
        hosts["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["status"] == "down")
    });

    // Users.
    let out = env.with_stdin(
        &[
            "user",
            "create",
            "vic",
            "--role",
            "viewer",
            "--password-stdin",
        ],
        "vic-password\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let users = env.json(&["user", "list"]);
    assert_eq!(users["items"].as_array().unwrap().len(), 2);
    assert!(env.ok(&["user", "list"]).contains("vic"));
    assert_eq!(
        env.json(&["user", "set-role", "vic", "operator"])["role"],
        "operator"
    );
    let out = env.with_stdin(
        &["user", "create", "vic", "--password-stdin"],
        "vic-password\n",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));

    // API keys: the secret works as HEARTH_TOKEN; revoking it ends it.
    let key = env.json(&["api-key", "create", "ci", "--role", "viewer"]);
    let secret = key["secret"].as_str().unwrap();
    let id = key["id"].as_str().unwrap();
    let out = env
        .cmd(&["whoami"])
        .env("HEARTH_TOKEN", secret)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("via api_key"));
    let out = env
        .cmd(&["user", "list"])
        .env("HEARTH_TOKEN", secret)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"));
    assert!(env.ok(&["api-key", "list"]).contains("ci"));
    env.ok(&["api-key", "revoke", id]);
    let out = env
        .cmd(&["whoami"])
        .env("HEARTH_TOKEN", secret)
        .output()
        .unwrap();
    assert!(!out.status.success());

    env.ok(&["user", "delete", "vic"]);
    let events = env.json(&["events", "--limit", "100"]);
    let actions: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for want in [
        "POST /v1/users",
        "DELETE /v1/users/{id}",
        "POST /v1/api-keys",
        "POST /v1/hosts/{id}/cordon",
        "rpc Register",
    ] {
        assert!(actions.contains(&want), "{want} missing from {actions:?}");
    }
    assert!(env.ok(&["events"]).contains("ACTOR"));
    env.ok(&["logout"]);
    assert!(!creds.exists());
}

#[test]
fn hearth_up_restarts_on_its_data_dir_with_the_same_host() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let port = free_port();
    let env = Env::new(format!("http://127.0.0.1:{port}"));
    let _reap = ReapVms(data.join("agent"));
    let host_id = {
        let _up = start_up(&data, port, Some("restart-password"));
        assert!(env
            .with_stdin(&["login", "--password-stdin"], "restart-password\n")
            .status
            .success());
        wait_for("the local agent", Duration::from_secs(30), || {
            env.json(&["host", "list"])["items"]
                .as_array()
                .is_some_and(|i| i.len() == 1)
        });
        env.json(&["host", "list"])["items"][0]["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        !data.join("admin-password").exists(),
        "the password came from the environment"
    );
    // A VM that was running before is running again after the restart (booted anew).
    {
        let _up = start_up(&data, port, None);
        env.ok(&["vm", "create", "keeper", "--no-start"]);
        // Until the restarted agent has joined again, its old address refuses: retry.
        wait_for("the VM to start", Duration::from_secs(30), || {
            env.run(&["vm", "start", "keeper"]).status.success()
        });
        let vm = env.json(&["vm", "get", "keeper"]);
        assert_ne!(vm["state"], "failed", "{vm}");
    }
    let _up = start_up(&data, port, None);
    // Sessions live in the database, so the saved login still works.
    wait_for("the local agent again", Duration::from_secs(30), || {
        let hosts = env.json(&["host", "list"]);
        let items = hosts["items"].as_array().cloned().unwrap_or_default();
        items.len() == 1 && items[0]["status"] == "up"
    });
    assert_eq!(
        env.json(&["host", "list"])["items"][0]["id"],
        host_id.as_str()
    );
    wait_for("the VM to run again", Duration::from_secs(150), || {
        env.json(&["vm", "get", "keeper"])["state"] == "running"
    });
    assert_eq!(
        env.ok(&["vm", "exec", "keeper", "--", "hostname"]).trim(),
        "keeper"
    );
}

#[test]
fn openapi_command_prints_the_document() {
    let out = Command::new(BIN).arg("openapi").output().unwrap();
    assert!(out.status.success());
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["info"]["title"], "Hearth API");
}

#[test]
fn cli_runs_a_vm_from_create_to_delete() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let _reap = ReapVms(data.join("agent"));
    let port = free_port();
    let _up = start_up(&data, port, Some("vm-password"));
    let env = Env::new(format!("http://127.0.0.1:{port}"));
    assert!(env
        .with_stdin(&["login", "--password-stdin"], "vm-password\n")
        .status
        .success());
    wait_for("the default image", Duration::from_secs(60), || {
        env.json(&["image", "list"])["items"]
            .as_array()
            .is_some_and(|i| !i.is_empty())
    });
    let kernel = env.json(&["image", "list"])["items"][0]["kernel_version"]
        .as_str()
        .unwrap()
        .to_string();

    let vm = env.json(&[
        "vm",
        "create",
        "cli1",
        "--image",
        "default",
        "--vcpus",
        "1",
        "--memory",
        "256",
        "--wait",
        "--timeout",
        "150",
    ]);
    assert_eq!(vm["state"], "running", "{vm}");
    assert!(env.ok(&["vm", "list"]).contains("cli1"));

    // exec prints the guest's output and exits with its code.
    assert_eq!(
        env.ok(&["vm", "exec", "cli1", "--", "uname", "-r"]).trim(),
        kernel
    );
    let out = env.run(&[
        "vm",
        "exec",
        "cli1",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    let out = env.with_stdin(&["vm", "exec", "cli1", "-i", "--", "wc", "-c"], "12345");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "5");

    assert!(env.ok(&["vm", "console", "cli1"]).contains("hearth-guest"));
    let m = env.json(&["vm", "metrics", "cli1"]);
    assert!(m["memory_total_mib"].as_f64().unwrap() > 0.0, "{m}");

    // The shell, driven through a pipe: its output comes back, and its exit code.
    let out = env.with_stdin(&["vm", "shell", "cli1"], "echo h''i\nexit 4\n");
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("hi"));

    // Snapshots: take one, restore it as a clone (which has the file), list, delete.
    env.ok(&[
        "vm",
        "exec",
        "cli1",
        "--",
        "sh",
        "-c",
        "echo kept > /root/f",
    ]);
    let snap = env.json(&["snapshot", "create", "cli1", "--name", "cs1"]);
    assert!(snap["size_bytes"].as_u64().unwrap() > 0, "{snap}");
    let clone = env.json(&["snapshot", "restore", "cs1", "--name", "cli2"]);
    assert_eq!(clone["state"], "running", "{clone}");
    assert_eq!(
        env.ok(&["vm", "exec", "cli2", "--", "cat", "/root/f"]),
        "kept\n"
    );
    assert!(env.ok(&["snapshot", "list"]).contains("cs1"));
    env.ok(&["vm", "delete", "cli2"]);
    env.ok(&["snapshot", "delete", "cs1"]);
    let out = env.run(&["snapshot", "get", "cs1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));

    // Port forwards need a network, and the error says so.
    let out = env.run(&["vm", "port-forward", "cli1", "18099:80"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("need a network"));

    // Networks through the CLI (this host may not manage them: VMs on one get user-mode
    // networking, which the VM says).
    let net = env.json(&["network", "create", "lan", "--cidr", "10.61.0.0/24"]);
    assert_eq!(net["gateway"], "10.61.0.1", "{net}");
    assert!(env.ok(&["network", "list"]).contains("10.61.0.0/24"));
    let out = env.run(&["network", "create", "lan2", "--cidr", "10.61.0.128/25"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("overlaps network lan"));
    env.ok(&["network", "delete", "lan"]);

    // An image from a directory holding a root filesystem: tarred, uploaded, booted.
    let tree = root.path().join("tree");
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", tree.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat"] {
        std::os::unix::fs::symlink("busybox", tree.join("bin").join(applet)).unwrap();
    }
    std::fs::write(tree.join("hello"), "from a directory\n").unwrap();
    let img = env.json(&[
        "image",
        "build",
        "--from-dir",
        tree.to_str().unwrap(),
        "--name",
        "tree",
    ]);
    assert_eq!(img["kind"], "rootfs", "{img}");
    let vm = env.json(&[
        "vm",
        "create",
        "cli3",
        "--image",
        "tree",
        "--disk",
        "0",
        "--wait",
        "--timeout",
        "150",
    ]);
    assert_eq!(vm["state"], "running", "{vm}");
    assert_eq!(
        env.ok(&["vm", "exec", "cli3", "--", "cat", "/hello"]),
        "from a directory\n"
    );
    env.ok(&["vm", "delete", "cli3"]);

    // A VM that is not running says so.
    let stopped = env.json(&["vm", "stop", "cli1"]);
    assert_eq!(stopped["state"], "stopped");
    let out = env.run(&["vm", "exec", "cli1", "--", "true"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("stopped"));
    env.ok(&["vm", "delete", "cli1"]);
    let out = env.run(&["vm", "get", "cli1"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));

    // A function: deploy, invoke (output; a failure exits non-zero), logs, metrics, delete.
    let code = root.path().join("handler.sh");
    std::fs::write(
        &code,
        "#!/bin/sh\nread -r ev\necho \"saw $ev\" >&2\ncase \"$ev\" in *bad*) echo nope >&2; exit 1;; esac\nprintf '{\"echo\":%s}' \"$ev\"\n",
    )
    .unwrap();
    assert!(env.ok(&["runtime", "list"]).contains("native"));
    assert!(env
        .with_stdin(&["secret", "set", "tok", "--value-stdin"], "abc\n")
        .status
        .success());
    let secrets = env.ok(&["secret", "list"]);
    assert!(
        secrets.contains("tok") && !secrets.contains("abc"),
        "{secrets}"
    );
    env.ok(&["secret", "delete", "tok"]);
    let f = env.json(&[
        "fn",
        "deploy",
        "hello",
        "--runtime",
        "native",
        "--code",
        code.to_str().unwrap(),
        "--timeout",
        "10",
    ]);
    assert_eq!(f["name"], "hello");
    let out = env.run(&["fn", "invoke", "hello", "--data", r#"{"a":1}"#]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, serde_json::json!({"echo": {"a": 1}}));
    assert!(String::from_utf8_lossy(&out.stderr).contains("saw {\"a\":1}"));
    let out = env.run(&["fn", "invoke", "hello", "--data", r#""bad""#]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("error: nope"));
    // Deploying again updates it.
    let f = env.json(&[
        "fn",
        "deploy",
        "hello",
        "--runtime",
        "native",
        "--code",
        code.to_str().unwrap(),
        "--memory",
        "192",
    ]);
    assert_eq!(f["memory_mib"], 192);
    assert!(env.ok(&["fn", "logs", "hello"]).contains("saw"));
    // `fn logs --follow` prints an invocation that finishes after it started.
    let mut follow = Proc(
        env.cmd(&["fn", "logs", "hello", "--follow", "--limit", "1"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut out = follow.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0
                || tx
                    .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                    .is_err()
            {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    env.ok(&["fn", "invoke", "hello", "--data", r#""followed""#]);
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen.contains("saw \"followed\"") {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => seen.push_str(&chunk),
            Err(_) => panic!("fn logs --follow did not print the new invocation: {seen:?}"),
        }
    }
    drop(follow);
    let id = env.ok(&["fn", "invoke", "hello", "--async", "--data", "7"]);
    let id = id.trim().to_string();
    wait_for("the async invocation", Duration::from_secs(60), || {
        env.json(&["fn", "invocation", &id])["status"] == "ok"
    });
    assert_eq!(env.json(&["fn", "invocation", &id])["output"]["echo"], 7);
    assert_eq!(env.json(&["fn", "publish", "hello"])["version"], 1);
    assert!(env.ok(&["fn", "versions", "hello"]).contains("192 MiB"));
    env.ok(&["fn", "alias", "set", "hello", "live", "--version", "1"]);
    assert!(env
        .ok(&["fn", "alias", "list", "hello"])
        .contains("v1 100%"));
    let out = env.run(&["fn", "invoke", "hello:live", "--data", "5"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.ok(&["fn", "alias", "delete", "hello", "live"]);
    let sid = env.ok(&["fn", "schedule", "add", "hello", "@hourly"]);
    assert!(env
        .ok(&["fn", "schedule", "list", "hello"])
        .contains("@hourly"));
    env.ok(&["fn", "schedule", "delete", "hello", sid.trim()]);
    assert!(!env
        .run(&["fn", "schedule", "add", "hello", "@sometimes"])
        .status
        .success());
    assert_eq!(env.json(&["fn", "metrics", "hello"])["invocations"], 5);
    env.ok(&["fn", "delete", "hello"]);
    assert!(!env.run(&["fn", "get", "hello"]).status.success());
}
