//! Boots a real guest under QEMU (TCG here) from the default image and talks to
//! `hearth-guest` over the virtio-serial channel: handshake, exec with stdin and exit codes,
//! a PTY, metrics, files, and a clean power-off. QEMU is killed even when the test fails.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hearth_guest_proto::client::GuestClient;
use hearth_guest_proto::msg::{PtySize, Request, Response};
use hearth_guest_proto::Kind;
use hearth_vmm::qemu::{serial_tail, Qemu};
use hearth_vmm::{Accel, Hypervisor, VmConfig};

/// Kills QEMU if the test ends early.
struct Guard(u32);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0 as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

fn exec(argv: &[&str]) -> Request {
    Request::Exec {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: BTreeMap::new(),
        cwd: None,
        timeout_ms: 0,
        pty: None,
    }
}

#[tokio::test]
async fn boots_a_guest_and_serves_the_protocol() {
    let data = tempfile::tempdir().unwrap();
    let image = hearth_agent::image::build_default(&data.path().join("images"))
        .expect("default image builds");
    let run_dir = data.path().join("vm");
    let qemu = Qemu {
        binary: hearth_vmm::VmmKind::Qemu
            .locate()
            .expect("qemu-system-x86_64 installed"),
    };
    let config = VmConfig {
        kernel: image.kernel.clone(),
        initrd: image.initrd.clone(),
        rootfs: None,
        disk: None,
        incoming: None,
        volumes: vec![],
        user_net: None,
        tap: None,
        vcpus: 1,
        memory_mib: 256,
        accel: Accel::Tcg,
        hostname: "boot-test".into(),
        run_dir: run_dir.clone(),
    };
    let started = Instant::now();
    let vm = qemu.launch(&config).await.expect("qemu starts");
    let _guard = Guard(vm.pid);
    let stream = vm.control.guest_stream().await.unwrap();
    let guest = match GuestClient::connect(stream, Duration::from_secs(90)).await {
        Ok(g) => g,
        Err(e) => panic!(
            "guest did not answer: {e}\nserial:\n{}",
            serial_tail(&config.serial_log(), 30)
        ),
    };
    eprintln!("guest answered after {:?}", started.elapsed());
    assert!(guest.hello.agent.starts_with("hearth-guest/"));
    assert!(!guest.hello.boot_id.is_empty());

    let out = guest
        .exec(&exec(&["uname", "-r"]), b"", 1 << 20)
        .await
        .unwrap();
    assert_eq!(out.code, 0);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        image.kernel_version
    );
    let out = guest
        .exec(&exec(&["hostname"]), b"", 1 << 20)
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "boot-test");

    // stdin in, separate stdout and stderr, exit codes, env.
    let mut env = BTreeMap::new();
    env.insert("WHO".to_string(), "world".to_string());
    let req = Request::Exec {
        argv: vec![
            "sh".into(),
            "-c".into(),
            "cat; echo hello $WHO; echo oops >&2; exit 3".into(),
        ],
        env,
        cwd: None,
        timeout_ms: 0,
        pty: None,
    };
    let out = guest.exec(&req, b"from stdin\n", 1 << 20).await.unwrap();
    assert_eq!(out.code, 3);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "from stdin\nhello world\n"
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    let out = guest
        .exec(&exec(&["/no/such/program"]), b"", 1 << 20)
        .await
        .unwrap();
    assert_eq!(out.code, 127);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot run"));

    // Concurrent execs share the channel.
    let (ra, rb, rc) = (
        exec(&["sh", "-c", "sleep 1; echo a"]),
        exec(&["sh", "-c", "echo b"]),
        exec(&["sh", "-c", "seq 1 20000 | wc -l"]),
    );
    let (a, b, c) = tokio::join!(
        guest.exec(&ra, b"", 1024),
        guest.exec(&rb, b"", 1024),
        guest.exec(&rc, b"", 1024),
    );
    assert_eq!(a.unwrap().stdout, b"a\n");
    assert_eq!(b.unwrap().stdout, b"b\n");
    assert_eq!(String::from_utf8_lossy(&c.unwrap().stdout).trim(), "20000");

    // A timeout kills the command.
    let req = Request::Exec {
        argv: vec!["sleep".into(), "30".into()],
        env: BTreeMap::new(),
        cwd: None,
        timeout_ms: 500,
        pty: None,
    };
    let t = Instant::now();
    let out = guest.exec(&req, b"", 1024).await.unwrap();
    assert!(out.timed_out && out.signal == Some(9), "{out:?}");
    assert!(t.elapsed() < Duration::from_secs(10));

    // A PTY: a shell that echoes.
    let req = Request::Exec {
        argv: vec!["sh".into()],
        env: BTreeMap::new(),
        cwd: None,
        timeout_ms: 0,
        pty: Some(PtySize { rows: 24, cols: 80 }),
    };
    let mut s = guest.open(&req).await.unwrap();
    s.send(Kind::Stdin, b"echo h''i; stty size; exit\n".to_vec())
        .await
        .unwrap();
    let mut screen = Vec::new();
    let code = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let f = s.recv().await.expect("stream open");
            match f.kind {
                Kind::Stdout => screen.extend_from_slice(&f.payload),
                Kind::Response => break f.parse::<Response>().unwrap(),
                _ => {}
            }
        }
    })
    .await
    .expect("pty session ends");
    let screen = String::from_utf8_lossy(&screen);
    assert!(
        screen.contains("\nhi\r\n") || screen.contains("hi\r\n"),
        "{screen:?}"
    );
    assert!(screen.contains("24 80"), "{screen:?}");
    assert!(matches!(code, Response::Exited { code: 0, .. }), "{code:?}");

    // Metrics and files.
    match guest.call(&Request::Metrics).await.unwrap() {
        Response::Metrics(m) => {
            assert!(
                m.memory_total_kib > 100_000 && m.uptime_s > 0.0 && m.cpu_total_ticks > 0,
                "{m:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    let w = Request::WriteFile {
        path: "/tmp/x/y.txt".into(),
        data: "aA==".into(),
        mode: 0o600,
        append: false,
    };
    assert_eq!(guest.call(&w).await.unwrap(), Response::Ok);
    let w = Request::WriteFile {
        path: "/tmp/x/y.txt".into(),
        data: "aQ==".into(),
        mode: 0o600,
        append: true,
    };
    assert_eq!(guest.call(&w).await.unwrap(), Response::Ok);
    assert_eq!(
        guest
            .call(&Request::ReadFile {
                path: "/tmp/x/y.txt".into()
            })
            .await
            .unwrap(),
        Response::File {
            data: "aGk=".into()
        }
    );

    // The serial log holds the boot.
    let serial = std::fs::read_to_string(run_dir.join("serial.log")).unwrap();
    assert!(serial.contains("hearth-guest"), "{serial}");

    // Power off: QEMU exits by itself.
    assert_eq!(
        guest
            .call(&Request::Shutdown { reboot: false })
            .await
            .unwrap(),
        Response::Ok
    );
    let status = tokio::time::timeout(Duration::from_secs(30), vm.exit)
        .await
        .expect("QEMU exits after power-off")
        .unwrap();
    assert_eq!(status, "exit status: 0");
}

/// The real KVM probe on this host: whatever the verdict, it has a reason, it matches what
/// a KVM boot does, and the probe leaves no QEMU behind.
#[tokio::test]
async fn the_kvm_probe_reaches_a_verdict_and_cleans_up() {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        eprintln!("skipped: /dev/kvm cannot be opened here");
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let image = hearth_agent::image::build_default(&data.path().join("images")).unwrap();
    let run_dir = data.path().join("probe");
    let qemu = hearth_vmm::VmmKind::Qemu.locate().expect("qemu installed");
    let verdict = hearth_agent::accel::probe(qemu, &image, &run_dir).await;
    eprintln!("verdict: {verdict:?}");
    match &verdict {
        hearth_agent::accel::KvmVerdict::Usable { reason }
        | hearth_agent::accel::KvmVerdict::Unusable { reason } => assert!(!reason.is_empty()),
        other => panic!("no verdict: {other:?}"),
    }
    let needle = run_dir.display().to_string();
    let left = std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(&needle))
            .unwrap_or(false)
    });
    assert!(!left, "the probe left its QEMU running");
}
