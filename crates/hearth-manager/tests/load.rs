//! A bounded load test on loopback: concurrent clients create and delete 20 real VMs (each
//! deleted while it may still be booting, some after it runs). No answer may be a 5xx, no
//! QEMU may be left, and the database must hold nothing of them at the end: no VM, no
//! resources still allocated on the host.

mod common;

use std::time::Duration;

use common::host::start_host;
use common::TestApp;
use reqwest::StatusCode;
use serde_json::json;

const CLIENTS: usize = 4;
const VMS_PER_CLIENT: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_clients_create_and_delete_twenty_vms() {
    let t = TestApp::spawn(common::Db::Postgres).await;
    let host = start_host(&t, Duration::from_secs(120)).await;
    let run_root = host.dir.path().join("run").join("vms");

    let client = |c: usize| {
        let t = &t;
        async move {
            let mut answers = Vec::new();
            for i in 0..VMS_PER_CLIENT {
                let name = format!("load-{c}-{i}");
                let (s, vm) = t
                    .post(
                        "/v1/vms",
                        json!({"name": name, "memory_mib": 128, "disk_mib": 0}),
                    )
                    .await;
                answers.push(("create", s, vm.to_string()));
                let Some(id) = vm["id"].as_str() else {
                    continue;
                };
                if i % 2 == 1 {
                    // Every other one is used before it goes.
                    let (s, b) = t
                        .get(&format!("/v1/vms/{id}/wait?state=running&timeout_s=60"))
                        .await;
                    answers.push(("wait", s, b.to_string()));
                }
                let s = t.delete(&format!("/v1/vms/{id}")).await;
                answers.push(("delete", s, String::new()));
            }
            answers
        }
    };
    let all: Vec<_> = futures_util::future::join_all((0..CLIENTS).map(client))
        .await
        .into_iter()
        .flatten()
        .collect();

    for (what, s, body) in &all {
        assert!(!s.is_server_error(), "{what} answered {s}: {body}");
    }
    let created = all
        .iter()
        .filter(|(w, s, _)| *w == "create" && *s == StatusCode::CREATED)
        .count();
    assert_eq!(created, CLIENTS * VMS_PER_CLIENT, "{all:?}");
    let waited: Vec<_> = all.iter().filter(|(w, _, _)| *w == "wait").collect();
    assert_eq!(waited.len(), CLIENTS * (VMS_PER_CLIENT / 2));
    for (_, s, body) in waited {
        assert_eq!(*s, StatusCode::OK, "{body}");
        assert!(body.contains(r#""state":"running""#), "{body}");
    }
    assert!(all
        .iter()
        .filter(|(w, _, _)| *w == "delete")
        .all(|(_, s, _)| *s == StatusCode::NO_CONTENT));

    // Nothing left: no record, nothing allocated, no QEMU, no run dir.
    let (_, vms) = t.get("/v1/vms").await;
    assert_eq!(vms["items"], json!([]), "{vms}");
    let (_, hosts) = t.get("/v1/hosts").await;
    assert_eq!(hosts["items"][0]["allocated"]["vcpus"], 0, "{hosts}");
    assert_eq!(hosts["items"][0]["allocated"]["memory_mib"], 0, "{hosts}");
    common::eventually(Duration::from_secs(30), "no QEMU left", || async {
        let needle = run_root.display().to_string();
        !std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(false)
        })
    })
    .await;
    let left: Vec<_> = std::fs::read_dir(&run_root)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "run dirs left: {left:?}");
    host.shutdown().await;
    t.shutdown().await;
}
