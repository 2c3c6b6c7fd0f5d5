//! Firecracker and Cloud Hypervisor end to end, through the same API as QEMU: create, exec,
//! a file on the VM's disk and one in its memory, snapshot, restore as a clone, delete —
//! against the real binaries, when `HEARTH_FIRECRACKER_BIN` or
//! `HEARTH_CLOUD_HYPERVISOR_BIN` names one and the host proves hardware KVM usable. Where
//! they cannot run, each test says it is skipped and why (`make test` shows it), having
//! started nothing.
//!
//! And everywhere: a VM asking for a VMM no host can run is refused before anything is
//! made, with each host's reason.

mod common;

use std::time::Duration;

use common::host::{start_host, start_host_with};
use common::{assert_error, sh, wait_vm, TestApp};
use hearth_agent::accel::AccelMode;
use hearth_agent::AgentConfig;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn skipped(vmm: &str, why: &str) {
    eprintln!("SKIPPED: {vmm} end to end: {why}");
}

/// The host's report of `vmm`, once its KVM probe has a verdict.
async fn vmm_report(t: &TestApp, vmm: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        let (_, hosts) = t.get("/v1/hosts").await;
        let host = &hosts["items"][0];
        let probing = host["accelerators"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["name"] == "kvm" && a["reason"] == "being probed");
        if !probing || std::time::Instant::now() > deadline {
            return host["vmms"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|v| v["name"] == vmm)
                .cloned()
                .unwrap_or(Value::Null);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn end_to_end(vmm: &str, env: &str) {
    let Some(bin) = std::env::var_os(env) else {
        return skipped(vmm, &format!("{env} is not set"));
    };
    if !std::path::Path::new(&bin).is_file() {
        return skipped(vmm, &format!("{env} names no file"));
    }
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return skipped(vmm, &format!("/dev/kvm cannot be opened: {e}"));
    }
    let t = TestApp::spawn(common::Db::Sqlite).await;
    let host = start_host_with(&t, AgentConfig::DEFAULT_BOOT_TIMEOUT, |c| {
        c.accel = AccelMode::Auto
    })
    .await;
    let report = vmm_report(&t, vmm).await;
    if report["usable"] != true {
        let why = report["reason"].as_str().unwrap_or("not reported");
        host.shutdown().await;
        return skipped(vmm, &format!("the host cannot run it: {why}"));
    }

    let (s, vm) = t
        .post(
            "/v1/vms",
            json!({"name": "orig", "vmm": vmm, "network": "none", "disk_mib": 256}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{vm}");
    assert_eq!(vm["vmm"], vmm);
    wait_vm(&t, "orig", "running").await;
    let (_, got) = t.get("/v1/vms/orig").await;
    assert_eq!(got["accelerator"], "kvm", "{got}");
    assert_eq!(sh(&t, "orig", "hostname").await, "orig\n");
    sh(
        &t,
        "orig",
        "echo disk > /root/on-disk; echo memory > /tmp/in-memory; sync",
    )
    .await;

    let (s, snap) = t
        .post("/v1/vms/orig/snapshots", json!({"name": "s1"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{snap}");
    assert_eq!(snap["profile"]["vmm"], vmm, "{snap}");
    assert!(snap["memory_bytes"].as_u64().unwrap() > 1 << 20, "{snap}");
    // The original runs on after the snapshot.
    assert_eq!(sh(&t, "orig", "cat /root/on-disk").await, "disk\n");

    let (s, clone) = t
        .post("/v1/snapshots/s1/restore", json!({"name": "clone"}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{clone}");
    assert_eq!(clone["vmm"], vmm, "a clone runs on the snapshot's VMM");
    wait_vm(&t, "clone", "running").await;
    assert_eq!(
        sh(&t, "clone", "cat /root/on-disk /tmp/in-memory; hostname").await,
        "disk\nmemory\nclone\n"
    );

    for name in ["clone", "orig"] {
        let s = t.delete(&format!("/v1/vms/{name}")).await;
        assert!(s.is_success(), "deleting {name}: {s}");
    }
    let (_, vms) = t.get("/v1/vms").await;
    assert_eq!(vms["items"].as_array().unwrap().len(), 0, "{vms}");
    host.shutdown().await;
}

#[tokio::test]
async fn end_to_end_on_firecracker() {
    end_to_end("firecracker", "HEARTH_FIRECRACKER_BIN").await;
}

#[tokio::test]
async fn end_to_end_on_cloud_hypervisor() {
    end_to_end("cloud-hypervisor", "HEARTH_CLOUD_HYPERVISOR_BIN").await;
}

/// What cannot run is refused before anything is made, naming why; the default is what
/// the host can run (QEMU here, where Firecracker is not usable).
#[tokio::test]
async fn a_vmm_no_host_can_run_is_refused_with_the_reasons() {
    let t = TestApp::spawn(common::Db::Sqlite).await;
    let host = start_host(&t, AgentConfig::DEFAULT_BOOT_TIMEOUT).await;
    let bad = |body: Value| {
        let t = &t;
        async move {
            let (s, b) = t.post("/v1/vms", body).await;
            assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
            b["error"]["message"].as_str().unwrap().to_string()
        }
    };
    let m = bad(json!({"name": "x", "vmm": "xen"})).await;
    assert!(m.contains("qemu, firecracker, cloud-hypervisor"), "{m}");
    let m = bad(json!({"name": "x", "vmm": "firecracker", "vcpus": 3})).await;
    assert!(m.contains("even number"), "{m}");
    let m = bad(json!({"name": "x", "vmm": "cloud-hypervisor", "network": "user"})).await;
    assert!(m.contains("no user-mode networking"), "{m}");
    let (s, b) = t
        .post(
            "/v1/templates",
            json!({"name": "t", "spec": {"vmm": "firecracker", "vcpus": 5}}),
        )
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");

    let (_, hosts) = t.get("/v1/hosts").await;
    let fc = hosts["items"][0]["vmms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "firecracker")
        .unwrap()
        .clone();
    assert_eq!(fc["usable"], false, "the test agent runs without KVM: {fc}");
    let (s, b) = t
        .post("/v1/vms", json!({"name": "x", "vmm": "firecracker"}))
        .await;
    assert_error(s, &b, StatusCode::CONFLICT, "conflict");
    let m = b["error"]["message"].as_str().unwrap();
    assert!(
        m.contains("cannot run firecracker") && m.contains(fc["reason"].as_str().unwrap()),
        "{m}"
    );
    let (_, vms) = t.get("/v1/vms").await;
    assert_eq!(vms["items"].as_array().unwrap().len(), 0, "{vms}");

    let (s, vm) = t
        .post("/v1/vms", json!({"name": "plain", "start": false}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{vm}");
    assert_eq!(vm["vmm"], "qemu");
    let (s, vm) = t
        .post(
            "/v1/vms",
            json!({"name": "named", "vmm": "qemu", "start": false}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{vm}");
    assert_eq!(vm["vmm"], "qemu");
    host.shutdown().await;
}
