//! Volumes and user-mode networking end to end on real TCG guests: data written through
//! one VM is read by another after detach and attach, volumes grow, a port forward on the
//! host's loopback reaches a server in the guest, and every misuse gets a clear 4xx. Every
//! QEMU is killed when the test ends.

mod common;

use std::time::Duration;

use common::host::start_host;
use common::{assert_error, fetch_until, free_port, sh, wait_vm, TestApp};
use hearth_agent::AgentConfig;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn restart(t: &TestApp, vm: &str) {
    let (s, b) = t
        .post(&format!("/v1/vms/{vm}/stop?force=true"), json!({}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    wait_vm(t, vm, "stopped").await;
    let (s, b) = t.post(&format!("/v1/vms/{vm}/start"), json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    wait_vm(t, vm, "running").await;
}

async fn post_ok(t: &TestApp, path: &str, body: Value) -> Value {
    let (s, b) = t.post(path, body).await;
    assert!(s.is_success(), "{path}: {s} {b}");
    b
}

#[tokio::test]
async fn volumes_move_data_between_vms_grow_and_refuse_misuse() {
    let t = TestApp::spawn(common::Db::Sqlite).await;
    let host = start_host(&t, AgentConfig::DEFAULT_BOOT_TIMEOUT).await;

    // Bad input is refused and leaves nothing.
    for (body, why) in [
        (json!({"name": "Data", "size_mib": 64}), "bad name"),
        (json!({"name": "data", "size_mib": 1}), "too small"),
        (json!({"name": "data"}), "no size"),
    ] {
        let (s, b) = t.post("/v1/volumes", body).await;
        assert!(s.is_client_error(), "{why}: {s} {b}");
    }
    let (_, list) = t.get("/v1/volumes").await;
    assert_eq!(list["items"], json!([]));

    let vol = post_ok(&t, "/v1/volumes", json!({"name": "data", "size_mib": 64})).await;
    assert_eq!(vol["mount_path"], "/volumes/data");
    let (s, b) = t
        .post("/v1/volumes", json!({"name": "data", "size_mib": 64}))
        .await;
    assert_error(s, &b, StatusCode::CONFLICT, "conflict");

    // Attached to a VM before it starts: mounted at boot; write through it.
    post_ok(&t, "/v1/vms", json!({"name": "va", "start": false})).await;
    let c = post_ok(&t, "/v1/volumes/data/attach", json!({"vm": "va"})).await;
    assert_eq!(c["applied_now"], true, "{c}");
    let (s, b) = t.post("/v1/volumes/data/attach", json!({"vm": "va"})).await;
    assert_error(s, &b, StatusCode::CONFLICT, "conflict");
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("already attached"));
    let (s, b) = t.post("/v1/vms/va/start", json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    wait_vm(&t, "va", "running").await;
    sh(&t, "va", "echo from-a > /volumes/data/f; sync").await;
    let (s, b) = t.post("/v1/vms/va/snapshots", json!({})).await;
    assert_error(s, &b, StatusCode::CONFLICT, "conflict");
    let (s, b) = t.post("/v1/volumes/data/detach", json!({})).await;
    assert_error(s, &b, StatusCode::CONFLICT, "conflict");
    assert_eq!(t.delete("/v1/volumes/data").await, StatusCode::CONFLICT);

    // Moved to a running VM: it sees the volume after a restart, data intact.
    let (s, b) = t.post("/v1/vms/va/stop?force=true", json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    wait_vm(&t, "va", "stopped").await;
    post_ok(&t, "/v1/volumes/data/detach", json!({})).await;
    post_ok(&t, "/v1/vms", json!({"name": "vb"})).await;
    wait_vm(&t, "vb", "running").await;
    let c = post_ok(&t, "/v1/volumes/data/attach", json!({"vm": "vb"})).await;
    assert_eq!(c["applied_now"], false, "{c}");
    assert!(c["message"].as_str().unwrap().contains("restarts"), "{c}");
    restart(&t, "vb").await;
    assert_eq!(sh(&t, "vb", "cat /volumes/data/f").await, "from-a\n");

    // Volumes only grow, and the guest sees the new size after a restart.
    let (s, b) = t
        .call(
            Method::PATCH,
            "/v1/volumes/data",
            Some(&t.admin_token),
            Some(json!({"size_mib": 32})),
        )
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    let (s, b) = t
        .call(
            Method::PATCH,
            "/v1/volumes/data",
            Some(&t.admin_token),
            Some(json!({"size_mib": 256})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // The VM's own disk grows too: only while it is stopped, and never shrinks.
    let grow = |mib: u64| {
        t.call(
            Method::PATCH,
            "/v1/vms/vb",
            Some(&t.admin_token),
            Some(json!({ "disk_mib": mib })),
        )
    };
    let (s, b) = grow(2048).await;
    assert_error(s, &b, StatusCode::CONFLICT, "conflict");
    let (s, b) = t.post("/v1/vms/vb/stop?force=true", json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    wait_vm(&t, "vb", "stopped").await;
    let (s, b) = grow(512).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    let (s, b) = grow(2048).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["disk_mib"], 2048);
    let (s, b) = t.post("/v1/vms/vb/start", json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    wait_vm(&t, "vb", "running").await;
    let root_mib: u64 = sh(&t, "vb", "df -m / | tail -1 | awk '{print $2}'")
        .await
        .trim()
        .parse()
        .unwrap();
    assert!(
        root_mib > 1800,
        "{root_mib} MiB after growing the disk to 2048"
    );
    let kib: u64 = sh(&t, "vb", "df -k /volumes/data | tail -1 | awk '{print $2}'")
        .await
        .trim()
        .parse()
        .unwrap();
    assert!(kib > 200 * 1024, "{kib} KiB after growing to 256 MiB");
    assert_eq!(sh(&t, "vb", "cat /volumes/data/f").await, "from-a\n");

    // Deleting the VM keeps the volume, detached; deleting the volume removes its file.
    assert_eq!(t.delete("/v1/vms/vb").await, StatusCode::NO_CONTENT);
    let (_, v) = t.get("/v1/volumes/data").await;
    assert_eq!(v["vm_id"], Value::Null, "{v}");
    let file = host
        .dir
        .path()
        .join("volumes")
        .join(format!("{}.ext4", v["id"].as_str().unwrap()));
    assert!(file.is_file());
    assert_eq!(t.delete("/v1/volumes/data").await, StatusCode::NO_CONTENT);
    assert!(!file.exists());
    let (s, _) = t.get("/v1/volumes/data").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    host.shutdown().await;
    t.shutdown().await;
}

#[tokio::test]
async fn a_port_forward_on_loopback_reaches_a_server_in_the_guest() {
    let t = TestApp::spawn(common::Db::Sqlite).await;
    let host = start_host(&t, AgentConfig::DEFAULT_BOOT_TIMEOUT).await;
    let port = free_port();
    let forward = json!([{"host_port": port, "guest_port": 8080}]);

    for (body, why) in [
        (
            json!({"name": "n0", "network": "user", "mac": "02:00:00:00:00:01"}),
            "a MAC without a managed network",
        ),
        (
            json!({"name": "n0", "ports": forward}),
            "ports without a network",
        ),
        (
            json!({"name": "n0", "network": "user", "ports": [{"host_port": port, "guest_port": 0}]}),
            "port 0",
        ),
        (
            json!({"name": "n0", "network": "user", "ports": [{"host_port": port, "guest_port": 1}, {"host_port": port, "guest_port": 2}]}),
            "one host port twice",
        ),
    ] {
        let (s, b) = t.post("/v1/vms", body).await;
        assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
        let _ = why;
    }
    let vm = post_ok(
        &t,
        "/v1/vms",
        json!({"name": "web", "network": "user", "ports": forward}),
    )
    .await;
    assert_eq!(vm["ip"], "10.0.2.15", "{vm}");
    let (s, b) = t
        .post(
            "/v1/vms",
            json!({"name": "web2", "network": "user", "ports": forward}),
        )
        .await;
    assert_error(s, &b, StatusCode::CONFLICT, "conflict");
    wait_vm(&t, "web", "running").await;
    assert!(sh(&t, "web", "ip -4 addr show eth0")
        .await
        .contains("10.0.2.15/24"));
    sh(
        &t,
        "web",
        "mkdir -p /root/www && echo hello-from-guest > /root/www/index.html && httpd -p 8080 -h /root/www",
    )
    .await;
    let url = format!("http://127.0.0.1:{port}/index.html");
    assert_eq!(fetch_until(&url, "hello").await, "hello-from-guest\n");
    // A forward added to the running VM works at once, and goes when removed.
    let live = free_port();
    let (s, v) = t
        .post(
            "/v1/vms/web/ports",
            json!({"host_port": live, "guest_port": 8080}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["ports"].as_array().unwrap().len(), 2, "{v}");
    let live_url = format!("http://127.0.0.1:{live}/index.html");
    assert_eq!(fetch_until(&live_url, "hello").await, "hello-from-guest\n");
    let (s, b) = t
        .post(
            "/v1/vms/web/ports",
            json!({"host_port": live, "guest_port": 22}),
        )
        .await;
    assert_error(s, &b, StatusCode::CONFLICT, "conflict");
    let (s, v) = t
        .call(
            Method::DELETE,
            &format!("/v1/vms/web/ports/{live}"),
            Some(&t.admin_token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["ports"].as_array().unwrap().len(), 1, "{v}");
    assert!(
        reqwest::get(&live_url).await.is_err(),
        "the removed forward still answers"
    );
    let (s, _) = t
        .call(
            Method::DELETE,
            &format!("/v1/vms/web/ports/{live}"),
            Some(&t.admin_token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // The forward goes with the VM.
    assert_eq!(t.delete("/v1/vms/web").await, StatusCode::NO_CONTENT);
    assert!(
        reqwest::get(&url).await.is_err(),
        "nothing listens once the VM is gone"
    );
    host.shutdown().await;
    t.shutdown().await;
}

#[tokio::test]
async fn a_template_makes_vms_with_their_volumes_and_user_data() {
    let t = TestApp::spawn(common::Db::Sqlite).await;
    let host = start_host(&t, AgentConfig::DEFAULT_BOOT_TIMEOUT).await;
    for body in [
        json!({"name": "Bad"}),
        json!({"name": "t1", "spec": {"network": "Not A Name"}}),
        json!({"name": "t1", "spec": {"volumes": [{"name": "d", "size_mib": 64}, {"name": "d", "size_mib": 64}]}}),
        json!({"name": "t1", "spec": {"cpus": 2}}),
        json!({"name": "t1", "spec": {"memory_mib": 1}}),
        json!({"name": "t1", "spec": {"disk_mib": 1}}),
    ] {
        let (s, b) = t.post("/v1/templates", body.clone()).await;
        assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    }
    let tpl = post_ok(
        &t,
        "/v1/templates",
        json!({"name": "worker", "spec": {"memory_mib": 192,
            "volumes": [{"name": "scratch", "size_mib": 32}],
            "user_data": "echo made-by-user-data > /root/marker\n"}}),
    )
    .await;
    assert_eq!(tpl["spec"]["memory_mib"], 192, "{tpl}");

    let (s, vm) = t
        .post("/v1/templates/worker/instantiate", json!({"name": "w1"}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{vm}");
    assert_eq!(vm["memory_mib"], 192);
    wait_vm(&t, "w1", "running").await;
    let (_, vol) = t.get("/v1/volumes/w1-scratch").await;
    assert_eq!(vol["vm_id"], vm["id"], "{vol}");
    assert!(sh(&t, "w1", "mount").await.contains("/volumes/w1-scratch"));
    // User data runs once, in the background, after the first boot.
    let mut out = String::new();
    for _ in 0..100 {
        let (_, b) = t
            .post(
                "/v1/vms/w1/exec",
                json!({"command": ["sh", "-c", "cat /root/marker /var/lib/hearth/user-data.done"]}),
            )
            .await;
        out = b["stdout"].as_str().unwrap_or_default().to_string();
        if out.contains('0') {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(out, "made-by-user-data\n0\n");

    // A name already taken leaves nothing behind (no stray volume).
    let (s, b) = t
        .post("/v1/templates/worker/instantiate", json!({"name": "w1"}))
        .await;
    assert_error(s, &b, StatusCode::CONFLICT, "conflict");
    let (_, vols) = t.get("/v1/volumes").await;
    assert_eq!(vols["items"].as_array().unwrap().len(), 1, "{vols}");
    assert_eq!(
        t.delete("/v1/templates/worker").await,
        StatusCode::NO_CONTENT
    );
    let (s, _) = t.get("/v1/vms/w1").await;
    assert_eq!(s, StatusCode::OK, "instances outlive their template");
    host.shutdown().await;
    t.shutdown().await;
}
