//! What the tests of the `hearth` binary share: a `hearth up` as a real process, and the
//! guards that stop it and its QEMUs, pass or fail.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_hearth");

/// Stops its child on drop: SIGTERM (so `hearth up` stops its VMs), SIGKILL after 15 s.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Kills any QEMU the agent with this data dir left behind (VMs outlive their agent), even
/// when a test panics. A `hearth up` in `DATA` has its agent in `DATA/agent`.
pub struct ReapVms(pub PathBuf);

impl Drop for ReapVms {
    fn drop(&mut self) {
        hearth_agent::vm::reap_leftovers(&self.0.join("run").join("vms"));
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn start_up(data: &Path, port: u16, password: Option<&str>) -> Proc {
    let mut c = Command::new(BIN);
    c.args([
        "up",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{port}"),
    ])
    .env_remove("HEARTH_ADMIN_PASSWORD")
    .env("HEARTH_ACCEL", "tcg")
    // Runtime images are slow to build: share the test suite's cache.
    .env(
        "HEARTH_IMAGES_DIR",
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/hearth-test-images"),
    )
    .env("HEARTH_HEARTBEAT_INTERVAL_MS", "300")
    .env("HEARTH_HOST_DOWN_AFTER_MS", "2000")
    .env("HEARTH_VM_LOST_AFTER_MS", "4000")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::from(
        std::fs::File::create(data.with_extension("log")).unwrap(),
    ));
    if let Some(p) = password {
        c.env("HEARTH_ADMIN_PASSWORD", p);
    }
    let p = Proc(c.spawn().unwrap());
    wait_for("hearth up to answer", Duration::from_secs(60), || {
        http_get(port, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
    });
    p
}

/// The CLI with a home of its own (its credentials), pointed at one manager, run inside a
/// network namespace when it has one.
pub struct Env {
    pub home: tempfile::TempDir,
    pub url: String,
    pub netns: Option<String>,
}

impl Env {
    pub fn new(url: impl Into<String>) -> Env {
        Env {
            home: tempfile::tempdir().unwrap(),
            url: url.into(),
            netns: None,
        }
    }

    /// An Env whose commands run in the network namespace `ns`.
    pub fn in_netns(ns: &str, url: impl Into<String>) -> Env {
        Env {
            netns: Some(ns.to_string()),
            ..Env::new(url)
        }
    }

    /// The `hearth` binary, in this Env's namespace, with nothing else set.
    pub fn bin(&self) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, BIN]);
                c
            }
            None => Command::new(BIN),
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.bin();
        c.args(args)
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join(".config"))
            .env("HEARTH_URL", &self.url)
            .env_remove("HEARTH_TOKEN")
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "hearth {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    pub fn with_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }
}
