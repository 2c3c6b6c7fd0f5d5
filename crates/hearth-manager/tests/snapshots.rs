//! Snapshots end to end on real TCG guests: save a VM's memory and disk, restore it as a
//! clone (the original running on) and in place, refuse a snapshot that no longer fits, and
//! keep or delete snapshots with their VM. Every QEMU is killed when the test ends.

mod common;

use common::host::start_host;
use common::{assert_error, sh, wait_vm, TestApp};
use hearth_agent::AgentConfig;
use reqwest::{Method, StatusCode};
use serde_json::json;

on_both_databases!(
    snapshots_restore_as_clones_and_in_place_and_refuse_misfits,
    |db| async move {
        let t = TestApp::spawn(db).await;
        let host = start_host(&t, AgentConfig::DEFAULT_BOOT_TIMEOUT).await;
        let (s, vm) = t.post("/v1/vms", json!({"name": "orig"})).await;
        assert_eq!(s, StatusCode::CREATED, "{vm}");
        assert_eq!(vm["disk_mib"], 1024, "a VM gets its own disk by default");
        wait_vm(&t, "orig", "running").await;

        // A stopped VM cannot be snapshotted; bad names are refused; nothing is recorded.
        let (s, b) = t
            .post("/v1/vms/orig/snapshots", json!({"name": "Bad Name"}))
            .await;
        assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
        let (s, b) = t.post("/v1/vms/nope/snapshots", json!({"name": "x"})).await;
        assert_error(s, &b, StatusCode::NOT_FOUND, "not_found");

        // One file on the VM's disk, one in its memory (/tmp).
        sh(
            &t,
            "orig",
            "echo disk > /root/on-disk; echo memory > /tmp/in-memory",
        )
        .await;
        let (s, snap) = t
            .post("/v1/vms/orig/snapshots", json!({"name": "s1"}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{snap}");
        assert!(snap["memory_bytes"].as_u64().unwrap() > 1 << 20, "{snap}");
        assert!(snap["disk_bytes"].as_u64().unwrap() > 0, "{snap}");
        assert_eq!(snap["profile"]["accel"], "tcg", "{snap}");
        assert_eq!(snap["profile"]["memory_mib"], 256, "{snap}");
        let (s, b) = t
            .post("/v1/vms/orig/snapshots", json!({"name": "s1"}))
            .await;
        assert_error(s, &b, StatusCode::CONFLICT, "conflict");
        // The original runs on after the snapshot.
        assert_eq!(sh(&t, "orig", "cat /root/on-disk").await, "disk\n");

        // A clone: both files, its own hostname, and it knows it was restored.
        let (s, clone) = t
            .post("/v1/snapshots/s1/restore", json!({"name": "clone"}))
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{clone}");
        wait_vm(&t, "clone", "running").await;
        assert_eq!(
            sh(
                &t,
                "clone",
                "cat /root/on-disk /tmp/in-memory; hostname; cat /run/hearth/restored"
            )
            .await,
            "disk\nmemory\nclone\n1 clone\n"
        );
        // Each has its own disk: a write in the clone is not seen by the original.
        sh(&t, "clone", "echo clone-only > /root/mine; sync").await;
        assert_eq!(
            sh(&t, "orig", "ls /root; hostname").await,
            "on-disk\norig\n"
        );
        let (s, b) = t
            .post("/v1/snapshots/s1/restore", json!({"name": "clone"}))
            .await;
        assert_error(s, &b, StatusCode::CONFLICT, "conflict");
        let (s, b) = t
            .post(
                "/v1/snapshots/s1/restore",
                json!({"name": "x", "in_place": true}),
            )
            .await;
        assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");

        // In place: a later write is rolled back.
        sh(&t, "orig", "echo later > /root/later; sync").await;
        let (s, b) = t
            .post("/v1/snapshots/s1/restore", json!({"in_place": true}))
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        wait_vm(&t, "orig", "running").await;
        assert_eq!(
            sh(&t, "orig", "ls /root; cat /tmp/in-memory").await,
            "on-disk\nmemory\n"
        );

        // A snapshot that no longer fits its VM: 409 naming the difference, and the VM is left
        // as it was.
        let (s, b) = t.post("/v1/vms/orig/stop?force=true", json!({})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        wait_vm(&t, "orig", "stopped").await;
        let (s, b) = t
            .call(
                Method::PATCH,
                "/v1/vms/orig",
                Some(&t.admin_token),
                Some(json!({"memory_mib": 320})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let (s, b) = t
            .post("/v1/snapshots/s1/restore", json!({"in_place": true}))
            .await;
        assert_error(s, &b, StatusCode::CONFLICT, "conflict");
        let msg = b["error"]["message"].as_str().unwrap();
        assert!(msg.contains("memory_mib: snapshot 256, here 320"), "{msg}");
        let (_, v) = t.get("/v1/vms/orig").await;
        assert_eq!(
            (&v["state"], &v["desired_state"]),
            (&json!("stopped"), &json!("stopped")),
            "{v}"
        );

        // Listing and sizes; the host reports what snapshots take.
        let (s, list) = t.get("/v1/snapshots?vm=orig").await;
        assert_eq!(s, StatusCode::OK, "{list}");
        assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
        let (_, hosts) = t.get("/v1/hosts").await;
        let disk = &hosts["items"][0]["disk"];
        assert!(
            disk["snapshots_bytes"].as_u64().unwrap_or(0) > 1 << 20,
            "{hosts}"
        );

        // Deleting the VM keeps its snapshot, which still restores; deleting the snapshot
        // removes its files.
        assert_eq!(t.delete("/v1/vms/orig").await, StatusCode::NO_CONTENT);
        let (s, snap) = t.get("/v1/snapshots/s1").await;
        assert_eq!(s, StatusCode::OK, "{snap}");
        let files = host
            .dir
            .path()
            .join("snapshots")
            .join(snap["id"].as_str().unwrap());
        assert!(files.join("memory.bin").is_file());
        let (s, b) = t
            .post("/v1/snapshots/s1/restore", json!({"in_place": true}))
            .await;
        assert_error(s, &b, StatusCode::CONFLICT, "conflict");
        assert_eq!(t.delete("/v1/snapshots/s1").await, StatusCode::NO_CONTENT);
        assert!(!files.exists());
        assert_eq!(t.delete("/v1/snapshots/s1").await, StatusCode::NOT_FOUND);
        let (s, b) = t.post("/v1/snapshots/s1/restore", json!({})).await;
        assert_error(s, &b, StatusCode::NOT_FOUND, "not_found");

        // `?snapshots=true` takes a VM's snapshots with it.
        let (s, b) = t
            .post("/v1/vms/clone/snapshots", json!({"name": "s2"}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        assert_eq!(
            t.delete("/v1/vms/clone?snapshots=true").await,
            StatusCode::NO_CONTENT
        );
        let (s, _) = t.get("/v1/snapshots/s2").await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        host.shutdown().await;
        t.shutdown().await;
    }
);
