//! Functions end to end on real guests: deploy a `native` handler, invoke it cold and warm,
//! errors, timeouts, code updates, concurrency against `max_instances`, idle TTL, logs,
//! metrics and deletion.

mod common;

use std::time::Duration;

use common::host::start_host;
use common::{assert_error, eventually, fn_vms, TestApp};
use hearth_agent::AgentConfig;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// A handler for /bin/sh whose behaviour the event picks.
const HANDLER: &str = r#"#!/bin/sh
read -r ev
echo "log line for $HEARTH_INVOCATION_ID" >&2
case "$ev" in
  *fail*) echo "first line" >&2; echo "boom: it failed" >&2; exit 3;;
  *nojson*) echo "this is not json"; exit 0;;
  *sleep*) sleep 30;;
  *slow*) sleep 1;;
esac
printf '{"got":%s,"fn":"%s","greeting":"%s","token":"%s","v":1}\n' "$ev" "$HEARTH_FUNCTION" "$GREETING" "$TOKEN"
"#;

async fn invoke(t: &TestApp, name: &str, event: Value) -> Value {
    let (s, b) = t.post(&format!("/v1/functions/{name}/invoke"), event).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b
}

#[tokio::test]
async fn native_functions_deploy_invoke_scale_and_retire() {
    let t = TestApp::spawn(common::Db::Sqlite).await;
    let host = start_host(&t, AgentConfig::DEFAULT_BOOT_TIMEOUT).await;

    let (_, rt) = t.get("/v1/runtimes").await;
    let native = rt["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "native")
        .unwrap();
    assert_eq!(native["available"], true);
    let (s, b) = t
        .post(
            "/v1/functions",
            json!({"name": "x", "runtime": "cobol", "code": "x"}),
        )
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("native"),
        "{b}"
    );
    let (s, b) = t
        .post("/v1/functions", json!({"name": "x", "runtime": "native"}))
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    let (s, b) = t
        .post(
            "/v1/functions",
            json!({"name": "x", "runtime": "native", "code": "x", "max_instances": 0}),
        )
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");

    let put = |name: &str, value: &str| {
        let t = &t;
        let path = format!("/v1/secrets/{name}");
        let body = json!({ "value": value });
        async move {
            t.call(Method::PUT, &path, Some(&t.admin_token), Some(body))
                .await
        }
    };
    let (s, sec) = put("api-token", "s3cr3t").await;
    assert_eq!(s, StatusCode::OK, "{sec}");
    assert!(sec.get("value").is_none());
    let (s, b) = put("Bad Name", "x").await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    let (s, f) = t
        .post(
            "/v1/functions",
            json!({"name": "echo", "runtime": "native", "code": HANDLER, "timeout_s": 2,
                   "max_instances": 2, "idle_ttl_s": 3, "env": {"GREETING": "hi"},
                   "secrets": {"TOKEN": "api-token"}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{f}");
    assert_eq!(f["code_size"], HANDLER.len());
    let (s, b) = t
        .post(
            "/v1/functions",
            json!({"name": "echo", "runtime": "native", "code": "x"}),
        )
        .await;
    assert_error(s, &b, StatusCode::CONFLICT, "conflict");

    // Cold, then warm; the output, the context and the logs.
    let r = invoke(&t, "echo", json!({"x": 1})).await;
    assert_eq!(r["error"], Value::Null, "{r}");
    assert_eq!(
        r["output"],
        json!({"got": {"x": 1}, "fn": "echo", "greeting": "hi", "token": "s3cr3t", "v": 1})
    );
    assert_eq!(r["cold_start"], true);
    assert_eq!(r["cold_start_from"], "boot", "{r}");
    let id = r["invocation_id"].as_str().unwrap().to_string();
    assert!(
        r["logs"]
            .as_str()
            .unwrap()
            .contains(&format!("log line for {id}")),
        "{r}"
    );
    let r = invoke(&t, "echo", json!("again")).await;
    assert_eq!(r["cold_start"], false, "{r}");
    assert_eq!(r["output"]["got"], "again");
    let (s, inv) = t.get(&format!("/v1/invocations/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{inv}");
    assert_eq!(inv["function"], "echo");

    // Handler failures are results, with a clear message; the VM stays.
    let r = invoke(&t, "echo", json!({"op": "fail"})).await;
    assert_eq!(r["error"]["message"], "boom: it failed", "{r}");
    assert!(r["error"]["stack"].as_str().unwrap().contains("first line"));
    let r = invoke(&t, "echo", json!({"op": "nojson"})).await;
    assert!(
        r["error"]["message"].as_str().unwrap().contains("not JSON"),
        "{r}"
    );
    let (s, b) = t
        .call(
            Method::POST,
            "/v1/functions/echo/invoke",
            Some(&t.admin_token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "an empty body is a null event: {b}");
    let big = "x".repeat(1_100_000);
    let (s, b) = t.post("/v1/functions/echo/invoke", json!(big)).await;
    assert_error(s, &b, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert_eq!(fn_vms(&t).await.len(), 1, "one warm VM served all of that");
    // A warm VM that vanished under the pool (deleted here) costs a retry, not an error.
    let vm = fn_vms(&t).await[0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        t.delete(&format!("/v1/vms/{vm}")).await,
        StatusCode::NO_CONTENT
    );
    // That cold start restores the snapshot taken after the first boot, and answers as a
    // booted VM did.
    let r = invoke(&t, "echo", json!({"x": 1})).await;
    assert_eq!(r["error"], Value::Null, "{r}");
    assert_eq!(r["cold_start"], true, "{r}");
    assert_eq!(r["cold_start_from"], "snapshot", "{r}");
    assert_eq!(
        r["output"],
        json!({"got": {"x": 1}, "fn": "echo", "greeting": "hi", "token": "s3cr3t", "v": 1})
    );
    let (_, m) = t.get("/v1/functions/echo/metrics").await;
    assert_eq!(m["cold_starts_from_snapshot"], 1, "{m}");

    // A handler past its timeout is killed and its VM retired.
    let r = invoke(&t, "echo", json!({"op": "sleep"})).await;
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("within 2 s"),
        "{r}"
    );
    eventually(
        Duration::from_secs(20),
        "the timed-out VM to be retired",
        || async { fn_vms(&t).await.is_empty() },
    )
    .await;

    // Five at once with max_instances 2: all succeed on at most two VMs.
    let calls = (0..5).map(|i| {
        let t = &t;
        async move { invoke(t, "echo", json!({"op": "slow", "i": i})).await }
    });
    for r in futures_util::future::join_all(calls).await {
        assert_eq!(r["error"], Value::Null, "{r}");
    }
    let (_, m) = t.get("/v1/functions/echo/metrics").await;
    assert!(m["instances_idle"].as_u64().unwrap() <= 2, "{m}");
    assert!(fn_vms(&t).await.len() <= 2);

    // Publish what runs now as version 1.
    let (s, v1) = t.post("/v1/functions/echo/versions", json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{v1}");
    assert_eq!(v1["version"], 1);

    // New code changes the output and retires the VMs running the old one.
    let v2 = HANDLER.replace("\"v\":1", "\"v\":2");
    let (s, b) = t
        .call(
            Method::PATCH,
            "/v1/functions/echo",
            Some(&t.admin_token),
            Some(json!({"code": v2})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let r = invoke(&t, "echo", json!(1)).await;
    assert_eq!(r["output"]["v"], 2, "{r}");
    assert_eq!(r["cold_start"], true);
    assert_eq!(
        r["cold_start_from"], "boot",
        "a snapshot of the old code does not serve the new: {r}"
    );

    // Versions stay as published; an alias splits calls between them by weight.
    let (s, v2) = t.post("/v1/functions/echo/versions", json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{v2}");
    assert_eq!(v2["version"], 2);
    let r = invoke(&t, "echo:1", json!(1)).await;
    assert_eq!(r["output"]["v"], 1, "{r}");
    assert_eq!(r["version"], 1);
    let (s, b) = t.post("/v1/functions/echo:7/invoke", json!(1)).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found");
    let put = |alias: &str, body: Value| {
        let t = &t;
        let path = format!("/v1/functions/echo/aliases/{alias}");
        async move {
            t.call(Method::PUT, &path, Some(&t.admin_token), Some(body))
                .await
        }
    };
    let (s, b) = put("live", json!({"version": 1, "weights": {"2": 100}})).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    let (s, b) = put("live", json!({"version": 9})).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found");
    let (s, a) = put("live", json!({"version": 1, "weights": {"2": 10}})).await;
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(a["routes"], json!({"1": 90, "2": 10}));
    let mut to_v2 = 0;
    for i in 0..100 {
        let r = invoke(&t, "echo:live", json!(i)).await;
        assert_eq!(r["error"], Value::Null, "{r}");
        if r["output"]["v"] == 2 {
            to_v2 += 1;
        }
    }
    // 10% of 100: well inside 2..=25 unless the split is wrong (p < 0.001).
    assert!(
        (2..=25).contains(&to_v2),
        "{to_v2} of 100 calls went to version 2"
    );
    assert_eq!(
        t.delete("/v1/functions/echo/aliases/live").await,
        StatusCode::NO_CONTENT
    );
    let (s, b) = t.post("/v1/functions/echo:live/invoke", json!(1)).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found");

    // Idle past the TTL: the VMs go.
    eventually(Duration::from_secs(30), "idle VMs to retire", || async {
        fn_vms(&t).await.is_empty()
    })
    .await;

    // Logs, metrics (JSON and Prometheus).
    let (_, logs) = t.get("/v1/functions/echo/logs?limit=1000").await;
    let items = logs["items"].as_array().unwrap();
    assert!(items.len() >= 10, "{logs}");
    assert!(items.iter().any(|i| i["status"] == "error"));
    let (_, m) = t.get("/v1/functions/echo/metrics").await;
    assert!(m["invocations"].as_u64().unwrap() >= 10, "{m}");
    assert!(m["errors"].as_u64().unwrap() >= 3, "{m}");
    assert!(m["cold_starts"].as_u64().unwrap() >= 2, "{m}");
    assert!(m["duration_ms_p50"].as_u64().unwrap() > 0, "{m}");
    let (_, prom) = t.get("/metrics").await;
    let prom = prom.as_str().unwrap();
    assert!(
        prom.contains(r#"hearth_function_invocations_total{function="echo",result="ok"}"#),
        "{prom}"
    );

    // Asynchronous: 202 at once, then the result under the invocation's id.
    let (s, q) = t
        .post(
            "/v1/functions/echo/invoke?async=true",
            json!({"later": true}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{q}");
    assert!(q["status"] == "queued" || q["status"] == "running", "{q}");
    let id = q["id"].as_str().unwrap().to_string();
    eventually(
        Duration::from_secs(60),
        "the async invocation to finish",
        || async {
            let (_, i) = t.get(&format!("/v1/invocations/{id}")).await;
            i["status"] == "ok" && i["output"]["got"]["later"] == true
        },
    )
    .await;

    // A schedule fires, repeatedly, until deleted.
    let (s, b) = t
        .post(
            "/v1/functions/echo/schedules",
            json!({"expr": "every minute"}),
        )
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    let (s, sched) = t
        .post(
            "/v1/functions/echo/schedules",
            json!({"expr": "@every 1s", "event": {"tick": 1}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{sched}");
    let ticks = || async {
        let (_, logs) = t.get("/v1/functions/echo/logs?limit=200").await;
        logs["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["output"]["got"]["tick"] == 1)
            .count()
    };
    eventually(Duration::from_secs(60), "two scheduled runs", || async {
        ticks().await >= 2
    })
    .await;
    let sid = sched["id"].as_str().unwrap();
    assert_eq!(
        t.delete(&format!("/v1/functions/echo/schedules/{sid}"))
            .await,
        StatusCode::NO_CONTENT
    );
    let (_, list) = t.get("/v1/functions/echo/schedules").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);

    // Deleted: 404, and nothing of it remains.
    assert_eq!(t.delete("/v1/functions/echo").await, StatusCode::NO_CONTENT);
    let (s, b) = t.post("/v1/functions/echo/invoke", json!({})).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found");
    eventually(
        Duration::from_secs(20),
        "the function's VMs to go",
        || async { fn_vms(&t).await.is_empty() },
    )
    .await;

    host.shutdown().await;
    t.shutdown().await;
}

on_both_databases!(functions_are_stored_and_validated, |db| async move {
    let t = TestApp::spawn(db).await;
    let code = base64_encode(b"#!/bin/sh\necho 1\n");
    let (s, f) = t
        .post(
            "/v1/functions",
            json!({"name": "f1", "runtime": "native", "code_base64": code}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{f}");
    assert_eq!(f["mode"], "process");
    assert_eq!(f["memory_mib"], 128);
    assert_eq!(f["code_size"], 17);
    let (s, b) = t
        .post(
            "/v1/functions",
            json!({"name": "f2", "runtime": "native", "code": "x", "code_base64": code}),
        )
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    let (s, b) = t
        .post(
            "/v1/functions",
            json!({"name": "f2", "runtime": "native", "code_base64": "%%%"}),
        )
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    let (s, b) = t
        .post(
            "/v1/functions",
            json!({"name": "f2", "runtime": "python", "code": "x"}),
        )
        .await;
    // No host has the python image: the error says how to build it.
    assert_error(s, &b, StatusCode::CONFLICT, "conflict");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("hearth runtime build python"),
        "{b}"
    );
    let (s, b) = t
        .call(
            Method::PATCH,
            "/v1/functions/f1",
            Some(&t.admin_token),
            Some(json!({"timeout_s": 5, "env": {"A": "b"}, "min_warm": 9, "max_instances": 2})),
        )
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    let (s, f) = t
        .call(
            Method::PATCH,
            "/v1/functions/f1",
            Some(&t.admin_token),
            Some(json!({"timeout_s": 5, "env": {"A": "b"}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{f}");
    assert_eq!(f["timeout_s"], 5);
    assert_eq!(f["env"]["A"], "b");
    let (_, list) = t.get("/v1/functions").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    // Secrets: stored encrypted, never shown, and a missing one is a clear 409.
    let (s, sec) = t
        .call(
            Method::PUT,
            "/v1/secrets/db-pass",
            Some(&t.admin_token),
            Some(json!({"value": "hunter2-hunter2"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{sec}");
    let stored = t.app.store().secret("db-pass").await.unwrap();
    assert!(!stored.ciphertext.contains("hunter2"));
    assert!(!String::from_utf8_lossy(
        &base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            &stored.ciphertext
        )
        .unwrap()
    )
    .contains("hunter2"));
    let (_, list) = t.get("/v1/secrets").await;
    assert_eq!(list["items"][0]["name"], "db-pass");
    assert!(!list.to_string().contains("hunter2"));
    let (s, f) = t
        .call(
            Method::PATCH,
            "/v1/functions/f1",
            Some(&t.admin_token),
            Some(json!({"secrets": {"DB": "no-such-secret"}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{f}");
    assert_eq!(f["secrets"]["DB"], "no-such-secret");
    let (s, b) = t.post("/v1/functions/f1/invoke", json!({})).await;
    assert_error(s, &b, StatusCode::CONFLICT, "conflict");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no-such-secret"),
        "{b}"
    );
    assert_eq!(
        t.delete("/v1/secrets/db-pass").await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(t.delete("/v1/secrets/db-pass").await, StatusCode::NOT_FOUND);

    // A function's rate limit: the second call within the second gets 429.
    let (s, f) = t
        .call(
            Method::PATCH,
            "/v1/functions/f1",
            Some(&t.admin_token),
            Some(json!({"secrets": {}, "rate_limit_per_s": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{f}");
    assert_eq!(f["rate_limit_per_s"], 1);
    let (s, b) = t.post("/v1/functions/f1/invoke", json!({})).await;
    assert_ne!(
        s,
        StatusCode::TOO_MANY_REQUESTS,
        "the first call is admitted: {b}"
    );
    let (s, b) = t.post("/v1/functions/f1/invoke", json!({})).await;
    assert_error(s, &b, StatusCode::TOO_MANY_REQUESTS, "too_many_requests");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("limit"),
        "{b}"
    );
    let (_, m) = t.get("/v1/functions/f1/metrics").await;
    assert_eq!(m["invocations"], 0);

    // A due run is claimed once, however many managers try.
    let (s, sched) = t
        .post("/v1/functions/f1/schedules", json!({"expr": "*/5 * * * *"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{sched}");
    let store = t.app.store();
    let far = hearth_store::now_ms() + 3_600_000;
    let due = store.due_schedules(far, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    let first = store
        .claim_schedule_run(&due[0], far + 1, "inv-a")
        .await
        .unwrap();
    let second = store
        .claim_schedule_run(&due[0], far + 1, "inv-b")
        .await
        .unwrap();
    assert!(first && !second, "claimed twice");
    // (This manager's own upkeep may already be running it: only one invocation exists.)
    let (s, _) = t.get("/v1/invocations/inv-a").await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = t.get("/v1/invocations/inv-b").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, b) = t.get("/v1/invocations/nope").await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(t.delete("/v1/functions/f1").await, StatusCode::NO_CONTENT);
    let (s, _) = t.get("/v1/functions/f1").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    t.shutdown().await;
});

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}
