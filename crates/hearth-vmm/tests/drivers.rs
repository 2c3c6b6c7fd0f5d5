//! The Firecracker and Cloud Hypervisor drivers as processes: started, configured over
//! their API socket, reached over the hybrid vsock, paused, saved, taken over by a
//! restarted agent, killed, and a saved state loaded into another VM's directory. Where the
//! real VMMs cannot run, `fake-vmm.py` stands in for both (see it for what it checks); the
//! real ones run the same paths in the manager's `vmms` end-to-end tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hearth_vmm::cloud_hypervisor::CloudHypervisor;
use hearth_vmm::firecracker::Firecracker;
use hearth_vmm::{Accel, Hypervisor, Launched, VmConfig};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn fake() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake-vmm.py")
}

/// A VM whose files are real (the kernel already an ELF, so nothing is extracted).
fn config(dir: &Path, vm: &str) -> VmConfig {
    let file = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    VmConfig {
        kernel: file("vmlinux.elf", b"\x7fELF fake kernel"),
        initrd: file("initrd.cpio", b"initrd"),
        rootfs: Some(file("rootfs.ext4", b"rootfs")),
        disk: Some(file(&format!("{vm}-disk.ext4"), b"disk")),
        incoming: None,
        volumes: vec![],
        user_net: None,
        tap: None,
        vcpus: 2,
        memory_mib: 256,
        accel: Accel::Kvm,
        hostname: vm.into(),
        run_dir: dir.join("run").join(vm),
    }
}

/// The calls the fake VMM in `root` was sent, as (method, path).
fn calls(root: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(root.join("fake-vmm.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["method"].as_str().unwrap().to_string(),
                v["path"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn paths(root: &Path) -> Vec<String> {
    calls(root).into_iter().map(|(_, p)| p).collect()
}

/// The guest channel carries bytes both ways (the fake echoes).
async fn echoes(l: &Launched) {
    let mut s = l.control.guest_stream().await.unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"ping");
}

async fn ends(l: Launched) -> String {
    l.control.kill();
    tokio::time::timeout(Duration::from_secs(10), l.exit)
        .await
        .expect("the VMM ends when killed")
        .unwrap()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Drives `hv` through a VM's life and a restore; `saved` names the files a save leaves.
async fn a_vm_lives_and_is_restored(
    hv: &dyn Hypervisor,
    boot: &[&str],
    restore: &[&str],
    saved: &[&str],
) {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), "vm1");
    let l = hv.launch(&c).await.unwrap();
    assert!(alive(l.pid));
    let root = &c.run_dir;
    assert_eq!(paths(root), boot);
    assert_eq!(
        std::fs::read_link(root.join("disk.img")).unwrap(),
        c.disk.clone().unwrap(),
        "the VM's disk is linked into its root under a fixed name"
    );
    echoes(&l).await;

    // Paused, then taken over as a restarted agent would: the same process, known paused.
    l.control.pause().await.unwrap();
    let adopted = hv
        .adopt(root)
        .await
        .unwrap()
        .expect("the VMM is found again");
    assert_eq!(adopted.launched.pid, l.pid);
    assert!(adopted.paused);

    let snap = dir.path().join("snap");
    std::fs::create_dir_all(&snap).unwrap();
    adopted.launched.control.save(&snap).await.unwrap();
    for f in saved {
        assert!(snap.join(f).is_file(), "{f} saved");
        assert!(!root.join(f).exists(), "{f} left behind in the root");
    }
    adopted.launched.control.resume().await.unwrap();
    echoes(&adopted.launched).await;
    let pid = l.pid;
    let how = ends(l).await;
    assert!(how.contains("signal: 9"), "{how}");
    assert!(!alive(pid), "killed and reaped");
    assert!(
        hv.adopt(root).await.unwrap().is_none(),
        "nothing to take over once it is gone"
    );

    // The state loads into another VM's root, with that VM's own disk.
    let mut c2 = config(dir.path(), "vm2");
    c2.incoming = Some(snap.clone());
    let l2 = hv.launch(&c2).await.unwrap();
    assert_eq!(paths(&c2.run_dir), restore);
    assert_eq!(
        std::fs::read_link(c2.run_dir.join("disk.img")).unwrap(),
        c2.disk.clone().unwrap()
    );
    echoes(&l2).await;
    ends(l2).await;

    // What the VMM refuses fails the launch with its words, and leaves no process.
    let mut c3 = config(dir.path(), "vm3");
    c3.initrd = dir.path().join("no-such-initrd");
    let err = match hv.launch(&c3).await {
        Ok(_) => panic!("a VM without its initrd started"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("no such file"), "{err}");
    let pid: u32 = std::fs::read_to_string(c3.run_dir.join("vmm.pid"))
        .unwrap()
        .parse()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!alive(pid), "the refused VMM was killed and reaped");
}

#[tokio::test]
async fn the_firecracker_driver_runs_saves_adopts_and_restores() {
    let cache = tempfile::tempdir().unwrap();
    let fc = Firecracker {
        binary: fake(),
        jailer: None,
        cache_dir: cache.path().into(),
    };
    a_vm_lives_and_is_restored(
        &fc,
        &[
            "/boot-source",
            "/machine-config",
            "/drives/rootfs",
            "/drives/disk",
            "/vsock",
            "/entropy",
            "/actions",
        ],
        &["/snapshot/load"],
        &["vmstate.bin", "memory.bin"],
    )
    .await;
}

#[tokio::test]
async fn the_cloud_hypervisor_driver_runs_saves_adopts_and_restores() {
    let cache = tempfile::tempdir().unwrap();
    let ch = CloudHypervisor {
        binary: fake(),
        cache_dir: cache.path().into(),
    };
    a_vm_lives_and_is_restored(
        &ch,
        &["/api/v1/vm.create", "/api/v1/vm.boot"],
        &["/api/v1/vm.restore", "/api/v1/vm.resume"],
        &["config.json", "state.json", "memory-ranges"],
    )
    .await;
}
