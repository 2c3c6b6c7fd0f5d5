//! Real VMs end to end: the manager's REST API → the agent over gRPC → QEMU (TCG here) →
//! `hearth-guest` in the guest, and back. One agent per test; every QEMU it started is
//! killed when the test ends, pass or fail.

mod common;

use std::path::Path;
use std::time::Duration;

use common::host::start_host;
use common::{assert_error, TestApp};
use futures_util::{SinkExt, StreamExt};
use hearth_agent::AgentConfig;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// Waits (up to `secs`) for a state through the API's own wait route.
async fn wait(t: &TestApp, id: &str, state: &str, secs: u64) -> (StatusCode, Value) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let (s, b) = t
            .get(&format!("/v1/vms/{id}/wait?state={state}&timeout_s=20"))
            .await;
        if s != StatusCode::REQUEST_TIMEOUT || std::time::Instant::now() > deadline {
            return (s, b);
        }
    }
}

async fn exec(t: &TestApp, id: &str, body: Value) -> Value {
    let (s, b) = t.post(&format!("/v1/vms/{id}/exec"), body).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b
}

fn qemu_running_in(run_dir: &Path) -> bool {
    let needle = run_dir.display().to_string();
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(&needle))
            .unwrap_or(false)
    })
}

async fn ws(
    t: &TestApp,
    path: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!("{}{}", t.url.replace("http://", "ws://"), path);
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", t.admin_token).parse().unwrap(),
    );
    let (s, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("WebSocket opens");
    s
}

#[tokio::test]
async fn a_vm_lives_its_whole_life_through_the_api() {
    let t = TestApp::spawn(common::Db::Sqlite).await;
    let host = start_host(&t, AgentConfig::DEFAULT_BOOT_TIMEOUT).await;
    let (_, images) = t.get("/v1/images").await;
    let kernel_version = images["items"][0]["kernel_version"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(images["items"][0]["name"], "default");

    // Validation first: every failure is a clear 4xx and leaves nothing behind.
    let (s, b) = t.post("/v1/vms", json!({"name": "Bad_Name"})).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    let (s, b) = t
        .post("/v1/vms", json!({"name": "x", "image": "nope"}))
        .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found");
    let (s, b) = t.post("/v1/vms", json!({"name": "x", "vcpus": 4096})).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    let (s, b) = t
        .post("/v1/vms", json!({"name": "x", "memory_mib": 1_000_000}))
        .await;
    assert_error(s, &b, StatusCode::CONFLICT, "conflict");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("MiB free"),
        "{b}"
    );
    let (s, b) = t
        .post("/v1/vms", json!({"name": "x", "colour": "red"}))
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    let (_, list) = t.get("/v1/vms").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");

    // Create → starting → running.
    let (s, vm) = t
        .post(
            "/v1/vms",
            json!({"name": "web1", "image": "default", "vcpus": 1, "memory_mib": 256}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{vm}");
    assert_eq!(vm["state"], "starting");
    let id = vm["id"].as_str().unwrap().to_string();
    let (s, b) = t.post("/v1/vms", json!({"name": "web1"})).await;
    assert_error(s, &b, StatusCode::CONFLICT, "conflict");
    let (s, vm) = wait(&t, &id, "running", 150).await;
    assert_eq!(s, StatusCode::OK, "{vm}");
    assert_eq!(vm["accelerator"], "tcg");
    assert!(vm["boot_ms"].as_u64().unwrap() > 0);
    let (s, b) = t.post(&format!("/v1/vms/{id}/start"), json!({})).await;
    assert_error(s, &b, StatusCode::CONFLICT, "conflict");

    // The host shows what the VM holds.
    let (_, hosts) = t.get("/v1/hosts").await;
    assert_eq!(hosts["items"][0]["allocated"]["memory_mib"], 256);

    // exec: the guest's kernel, stdout and stderr apart, stdin, env, exit codes.
    let out = exec(&t, "web1", json!({"command": ["uname", "-r"]})).await;
    assert_eq!(out["stdout"].as_str().unwrap().trim(), kernel_version);
    assert_eq!(out["exit_code"], 0);
    let out = exec(
        &t,
        &id,
        json!({"command": ["sh", "-c", "cat; echo $WHO; echo oops >&2; exit 7"],
               "env": {"WHO": "world"}, "stdin": "in\n"}),
    )
    .await;
    assert_eq!(out["stdout"], "in\nworld\n");
    assert_eq!(out["stderr"], "oops\n");
    assert_eq!(out["exit_code"], 7);
    let out = exec(&t, &id, json!({"command": ["sleep", "5"], "timeout_s": 1})).await;
    assert_eq!(out["timed_out"], true);
    let (s, b) = t
        .post(&format!("/v1/vms/{id}/exec"), json!({"command": []}))
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");

    // Concurrent execs on one VM.
    let runs = (0..4).map(|i| {
        let t = &t;
        let id = id.clone();
        async move {
            exec(
                t,
                &id,
                json!({"command": ["sh", "-c", format!("sleep 0.5; echo {i}")]}),
            )
            .await
        }
    });
    let outs = futures_util::future::join_all(runs).await;
    for (i, o) in outs.iter().enumerate() {
        assert_eq!(o["stdout"].as_str().unwrap().trim(), i.to_string());
    }

    // The console holds the boot log.
    let resp = t
        .http
        .get(format!("{}/v1/vms/{id}/console", t.url))
        .bearer_auth(&t.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let console = resp.text().await.unwrap();
    assert!(console.contains("hearth-guest"), "{console}");

    // Metrics are real numbers, also as a WebSocket stream.
    let (s, m) = t.get(&format!("/v1/vms/{id}/metrics")).await;
    assert_eq!(s, StatusCode::OK, "{m}");
    assert!(m["memory_total_mib"].as_f64().unwrap() > 100.0, "{m}");
    assert!(m["memory_used_mib"].as_f64().unwrap() > 0.0, "{m}");
    assert!(m["uptime_s"].as_f64().unwrap() > 0.0, "{m}");
    assert!(m["processes"].as_u64().unwrap() > 0, "{m}");
    let mut mws = ws(&t, &format!("/v1/vms/{id}/metrics")).await;
    for _ in 0..2 {
        let frame = tokio::time::timeout(Duration::from_secs(15), mws.next())
            .await
            .expect("a metrics frame every second")
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
        assert!(v["memory_total_mib"].as_f64().unwrap() > 0.0, "{v}");
    }
    drop(mws);

    // The shell: a PTY over a WebSocket.
    let mut sh = ws(&t, &format!("/v1/vms/{id}/shell?rows=30&cols=100")).await;
    sh.send(Message::text(r#"{"resize":{"rows":40,"cols":120}}"#))
        .await
        .unwrap();
    sh.send(Message::binary(b"stty size; echo h''i\n".to_vec()))
        .await
        .unwrap();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !(seen.contains("\nhi") && seen.contains("40 120")) {
        let f = tokio::time::timeout_at(deadline, sh.next())
            .await
            .unwrap_or_else(|_| panic!("no hi from the shell; saw {seen:?}"))
            .unwrap()
            .unwrap();
        if let Message::Binary(b) = f {
            seen.push_str(&String::from_utf8_lossy(&b));
        }
    }
    sh.send(Message::binary(b"exit 3\n".to_vec()))
        .await
        .unwrap();
    let mut exit = None;
    while let Ok(Some(Ok(f))) = tokio::time::timeout(Duration::from_secs(15), sh.next()).await {
        if let Message::Text(t) = f {
            exit = serde_json::from_str::<Value>(&t).ok();
            break;
        }
    }
    assert_eq!(exit.expect("an exit frame")["exit_code"], 3);
    let (_, events) = t.get("/v1/events").await;
    assert!(
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "GET /v1/vms/{id}/shell"),
        "opening a shell is audited: {events}"
    );

    // Stop → stopped (exec refused) → start → running → delete.
    let run_dir = host.run_dir(&id);
    assert!(qemu_running_in(&run_dir));
    let (s, vm) = t.post(&format!("/v1/vms/{id}/stop"), json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{vm}");
    let (s, vm) = wait(&t, &id, "stopped", 60).await;
    assert_eq!(s, StatusCode::OK, "{vm}");
    assert!(!qemu_running_in(&run_dir), "QEMU outlived stop");
    let (s, b) = t
        .post(&format!("/v1/vms/{id}/exec"), json!({"command": ["true"]}))
        .await;
    assert_error(s, &b, StatusCode::CONFLICT, "conflict");
    let (s, b) = t
        .call(
            Method::PATCH,
            &format!("/v1/vms/{id}"),
            Some(&t.admin_token),
            Some(json!({"memory_mib": 192})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, vm) = t.post(&format!("/v1/vms/{id}/start"), json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{vm}");
    let (s, vm) = wait(&t, &id, "running", 150).await;
    assert_eq!(s, StatusCode::OK, "{vm}");
    let out = exec(
        &t,
        &id,
        json!({"command": ["sh", "-c", "grep MemTotal /proc/meminfo"]}),
    )
    .await;
    let kib: u64 = out["stdout"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        kib < 192 * 1024 && kib > 100 * 1024,
        "resized memory: {out}"
    );

    assert_eq!(
        t.delete(&format!("/v1/vms/{id}")).await,
        StatusCode::NO_CONTENT
    );
    let (s, _) = t.get(&format!("/v1/vms/{id}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(!run_dir.exists(), "run dir left behind");
    assert!(!qemu_running_in(&run_dir), "QEMU left behind");

    host.shutdown().await;
    t.shutdown().await;
}

#[tokio::test]
async fn a_vm_whose_qemu_dies_or_never_answers_is_failed_with_its_console_tail() {
    let t = TestApp::spawn(common::Db::Sqlite).await;
    let host = start_host(&t, AgentConfig::DEFAULT_BOOT_TIMEOUT).await;
    let (s, vm) = t.post("/v1/vms", json!({"name": "doomed"})).await;
    assert_eq!(s, StatusCode::CREATED, "{vm}");
    let id = vm["id"].as_str().unwrap().to_string();
    let (s, vm) = wait(&t, &id, "running", 150).await;
    assert_eq!(s, StatusCode::OK, "{vm}");
    let pid: i32 = std::fs::read_to_string(host.run_dir(&id).join("qemu.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let (s, vm) = wait(&t, &id, "failed", 30).await;
    assert_eq!(s, StatusCode::OK, "{vm}");
    // Waiting for `running` now answers 409 with the reason.
    let (s, b) = wait(&t, &id, "running", 30).await;
    assert_error(s, &b, StatusCode::CONFLICT, "conflict");
    assert!(
        vm["reason"]
            .as_str()
            .unwrap()
            .contains("exited unexpectedly"),
        "{vm}"
    );
    assert!(
        vm["console_tail"].as_str().is_some_and(|c| !c.is_empty()),
        "{vm}"
    );
    // A failed VM can be started again.
    let (s, vm) = t.post(&format!("/v1/vms/{id}/start"), json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{vm}");
    let (s, vm) = wait(&t, &id, "running", 150).await;
    assert_eq!(s, StatusCode::OK, "{vm}");
    assert_eq!(
        t.delete(&format!("/v1/vms/{id}")).await,
        StatusCode::NO_CONTENT
    );
    let first = host.agent.as_ref().unwrap().host_id.clone();
    host.shutdown().await;
    assert_eq!(
        t.delete(&format!("/v1/hosts/{first}")).await,
        StatusCode::NO_CONTENT
    );

    // A guest that does not answer within the bound: one second is far less than a boot.
    let impatient = start_host(&t, Duration::from_secs(1)).await;
    let (s, vm) = t.post("/v1/vms", json!({"name": "silent"})).await;
    assert_eq!(s, StatusCode::CREATED, "{vm}");
    let id = vm["id"].as_str().unwrap().to_string();
    let (s, b) = wait(&t, &id, "running", 60).await;
    assert_error(s, &b, StatusCode::CONFLICT, "conflict");
    let msg = b["error"]["message"].as_str().unwrap();
    assert!(msg.contains("did not become ready (bound: 1 s)"), "{msg}");
    assert!(
        !qemu_running_in(&impatient.run_dir(&id)),
        "QEMU of a failed boot left running"
    );
    impatient.shutdown().await;
    t.shutdown().await;
}

#[tokio::test]
async fn a_paused_vm_answers_nothing_until_resumed() {
    let t = TestApp::spawn(common::Db::Sqlite).await;
    let host = start_host(&t, AgentConfig::DEFAULT_BOOT_TIMEOUT).await;
    let (s, vm) = t.post("/v1/vms", json!({"name": "p1"})).await;
    assert_eq!(s, StatusCode::CREATED, "{vm}");
    let (s, vm) = wait(&t, "p1", "running", 150).await;
    assert_eq!(s, StatusCode::OK, "{vm}");

    // Paused: exec is refused, and says why.
    let (s, vm) = t.post("/v1/vms/p1/pause", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{vm}");
    assert_eq!(vm["state"], "paused");
    let (s, again) = t.post("/v1/vms/p1/pause", json!({})).await;
    assert_eq!((s, &again["state"]), (StatusCode::OK, &json!("paused")));
    let (s, b) = t
        .post("/v1/vms/p1/exec", json!({"command": ["true"]}))
        .await;
    assert_error(s, &b, StatusCode::CONFLICT, "conflict");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("paused"),
        "{b}"
    );

    // Resumed: it answers again, its processes intact.
    let (s, vm) = t.post("/v1/vms/p1/resume", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{vm}");
    assert_eq!(vm["state"], "running");
    let out = exec(&t, "p1", json!({"command": ["echo", "back"]})).await;
    assert_eq!(out["stdout"], "back\n");

    // A paused VM still stops (gracefully: it is resumed first).
    let (s, _) = t.post("/v1/vms/p1/pause", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = t.post("/v1/vms/p1/stop", json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let (s, vm) = wait(&t, "p1", "stopped", 60).await;
    assert_eq!(s, StatusCode::OK, "{vm}");
    for op in ["pause", "resume"] {
        let (s, b) = t.post(&format!("/v1/vms/p1/{op}"), json!({})).await;
        assert_error(s, &b, StatusCode::CONFLICT, "conflict");
    }
    host.shutdown().await;
}
