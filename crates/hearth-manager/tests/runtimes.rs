//! Runtimes end to end: images built through the API (once per checkout: the test agents
//! share one images directory), then Python, Node.js, Bash, Rust, Go and Java functions
//! deployed and invoked in real guests, in persistent and process mode, with their errors.

mod common;

use std::time::{Duration, Instant};

use common::host::start_host;
use common::{assert_error, fn_vms, TestApp};
use hearth_agent::AgentConfig;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const PYTHON: &str = r#"
calls = 0

def handler(event, context):
    global calls
    calls += 1
    print("python log", context.invocation_id)
    return {"calls": calls, "event": event, "fn": context.function_name,
            "left": context.remaining_ms() > 0}

def boom(event, context):
    raise ValueError("boom")

def not_json(event, context):
    return {1, 2}

def sleepy(event, context):
    import time
    time.sleep(60)
"#;

const NODE: &str = r#"
let calls = 0;
exports.handler = async (event, context) => {
  calls += 1;
  console.log('node log', context.invocationId);
  await new Promise((r) => setTimeout(r, 1));
  return { calls, event, fn: context.functionName };
};
exports.boom = () => { throw new TypeError('bad type'); };
"#;

const BASH: &str = r#"
calls=0
handler() {
  calls=$((calls + 1))
  echo "bash log $HEARTH_INVOCATION_ID" >&2
  jq -c --argjson calls "$calls" --arg fn "$HEARTH_FUNCTION" '{calls: $calls, event: ., fn: $fn}' <<<"$1"
}
fails() { echo "going down" >&2; return 3; }
"#;

/// Builds the runtime's image through the API and waits until the host has it.
async fn build(t: &TestApp, name: &str) {
    let (s, b) = t
        .post(&format!("/v1/runtimes/{name}/build"), json!({}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let started = Instant::now();
    loop {
        let (s, rt) = t.get(&format!("/v1/runtimes/{name}")).await;
        assert_eq!(s, StatusCode::OK, "{rt}");
        let state = rt["hosts"][0]["state"].as_str().unwrap().to_string();
        match state.as_str() {
            "ready" => {
                assert!(rt["hosts"][0]["size_bytes"].as_u64().unwrap() > 10 << 20);
                break;
            }
            "building" => assert!(rt["hosts"][0]["message"].is_string(), "{rt}"),
            other => panic!("the {name} build went {other}: {rt}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(20 * 60),
            "the {name} image is still building after 20 minutes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The heartbeat carries the new image to the manager; deploying needs it.
    let started = Instant::now();
    loop {
        let (_, rt) = t.get(&format!("/v1/runtimes/{name}")).await;
        if rt["available"] == true {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the {name} runtime is built but not available: {rt}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn invoke(t: &TestApp, name: &str, event: Value) -> Value {
    let (s, b) = t.post(&format!("/v1/functions/{name}/invoke"), event).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b
}

async fn deploy(t: &TestApp, body: Value) {
    let (s, f) = t.post("/v1/functions", body).await;
    assert_eq!(s, StatusCode::CREATED, "{f}");
}

async fn set(t: &TestApp, name: &str, body: Value) {
    let (s, f) = t
        .call(
            Method::PATCH,
            &format!("/v1/functions/{name}"),
            Some(&t.admin_token),
            Some(body),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{f}");
}

async fn delete(t: &TestApp, name: &str) {
    let (s, b) = t
        .call(
            Method::DELETE,
            &format!("/v1/functions/{name}"),
            Some(&t.admin_token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
}

/// Two calls: persistent mode keeps the module's state, and the context and logs arrive.
async fn check_runs(t: &TestApp, name: &str, log: &str) {
    let r = invoke(t, name, json!({"n": 1})).await;
    assert_eq!(r["error"], Value::Null, "{r}");
    assert_eq!(r["output"]["calls"], 1, "{r}");
    assert_eq!(r["output"]["event"], json!({"n": 1}));
    assert_eq!(r["output"]["fn"], name);
    let id = r["invocation_id"].as_str().unwrap();
    assert!(
        r["logs"].as_str().unwrap().contains(&format!("{log} {id}")),
        "{r}"
    );
    let r = invoke(t, name, json!([2])).await;
    assert_eq!(r["output"]["calls"], 2, "persistent mode keeps state: {r}");
    assert_eq!(r["cold_start"], false);
    let logs = r["logs"].as_str().unwrap();
    assert_eq!(
        logs.matches(log).count(),
        1,
        "each call has its own logs: {r}"
    );
}

/// A compiled runtime: broken code fails the deploy with the compiler's message (naming
/// `diagnostic`) and leaves nothing; then `function` deploys, keeps state across calls in
/// persistent mode and reports a refused event as `refused`.
async fn check_compiled(
    t: &TestApp,
    function: Value,
    broken: &str,
    diagnostic: &str,
    refused: &str,
) {
    let name = function["name"].as_str().unwrap().to_string();
    let mut bad = function.clone();
    bad["code"] = broken.into();
    let (s, b) = t.post("/v1/functions", bad).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    let message = b["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("does not compile") && message.contains(diagnostic),
        "{b}"
    );
    let (s, _) = t.get(&format!("/v1/functions/{name}")).await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "nothing is left of a failed deploy"
    );
    deploy(t, function).await;
    check_runs(t, &name, &format!("{name} log")).await;
    let r = invoke(t, &name, json!("fail")).await;
    assert_eq!(r["error"]["message"], refused, "{r}");
}

#[tokio::test]
async fn python_node_and_bash_functions_run_in_their_runtimes() {
    let t = TestApp::spawn(common::Db::Sqlite).await;
    let host = start_host(&t, AgentConfig::DEFAULT_BOOT_TIMEOUT).await;

    let (s, b) = t.get("/v1/runtimes/cobol").await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found");
    assert!(b["error"]["message"].as_str().unwrap().contains("python"));
    let (s, b) = t.post("/v1/runtimes/native/build", json!({})).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");

    for rt in ["python", "node", "bash"] {
        build(&t, rt).await;
    }
    let (_, list) = t.get("/v1/runtimes").await;
    for rt in ["python", "node", "bash"] {
        let r = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == rt)
            .unwrap();
        assert_eq!(r["available"], true, "{r}");
        assert_eq!(r["image"], format!("runtime-{rt}"));
    }

    // Python: persistent by default; then its errors; then process mode.
    deploy(
        &t,
        json!({"name": "py", "runtime": "python", "code": PYTHON, "timeout_s": 5}),
    )
    .await;
    let (_, f) = t.get("/v1/functions/py").await;
    assert_eq!(f["mode"], "persistent");
    assert_eq!(f["handler"], "handler.handler");
    check_runs(&t, "py", "python log").await;
    // A cold start from the snapshot taken after the first boot (the worker already
    // started, no call made yet) answers exactly as the first call after a boot did.
    for vm in fn_vms(&t).await {
        let id = vm["id"].as_str().unwrap();
        assert_eq!(
            t.delete(&format!("/v1/vms/{id}")).await,
            StatusCode::NO_CONTENT
        );
    }
    let r = invoke(&t, "py", json!({"n": 1})).await;
    assert_eq!(r["cold_start_from"], "snapshot", "{r}");
    assert_eq!(
        r["output"],
        json!({"calls": 1, "event": {"n": 1}, "fn": "py", "left": true}),
        "{r}"
    );
    set(&t, "py", json!({"handler": "handler.boom"})).await;
    let r = invoke(&t, "py", json!({})).await;
    assert_eq!(r["error"]["message"], "ValueError: boom", "{r}");
    let stack = r["error"]["stack"].as_str().unwrap();
    assert!(
        stack.contains("/code/handler.py") && !stack.contains("shim"),
        "{stack}"
    );
    set(&t, "py", json!({"handler": "handler.not_json"})).await;
    let r = invoke(&t, "py", json!({})).await;
    assert!(
        r["error"]["message"].as_str().unwrap().contains("not JSON"),
        "{r}"
    );
    set(
        &t,
        "py",
        json!({"handler": "handler.sleepy", "timeout_s": 2}),
    )
    .await;
    let r = invoke(&t, "py", json!({})).await;
    assert_eq!(
        r["error"]["message"], "the handler did not finish within 2 s",
        "{r}"
    );
    set(
        &t,
        "py",
        json!({"handler": "handler.handler", "mode": "process", "timeout_s": 30}),
    )
    .await;
    for _ in 0..2 {
        let r = invoke(&t, "py", json!(null)).await;
        assert_eq!(r["output"]["calls"], 1, "a fresh process each call: {r}");
    }
    // Code with a syntax error deploys; invoking it says where the error is.
    set(&t, "py", json!({"code": "def handler(event context):\n"})).await;
    let r = invoke(&t, "py", json!({})).await;
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("SyntaxError"),
        "{r}"
    );
    assert!(
        r["error"]["stack"].as_str().unwrap().contains("line 1"),
        "{r}"
    );
    delete(&t, "py").await;

    // Several files: a tar.gz unpacked into /code.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("handler.py"),
        "import helper\ndef handler(event, context):\n    return helper.shout(event)\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("helper.py"),
        "def shout(s):\n    return s.upper() + '!'\n",
    )
    .unwrap();
    let tgz = dir.path().join("code.tgz");
    let ok = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&tgz)
        .args([
            "-C",
            dir.path().to_str().unwrap(),
            "handler.py",
            "helper.py",
        ])
        .status()
        .unwrap()
        .success();
    assert!(ok, "tar");
    use base64::Engine;
    let code = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&tgz).unwrap());
    deploy(
        &t,
        json!({"name": "pkg", "runtime": "python", "code_base64": code}),
    )
    .await;
    let r = invoke(&t, "pkg", json!("hi")).await;
    assert_eq!(r["output"], "HI!", "{r}");
    delete(&t, "pkg").await;

    deploy(&t, json!({"name": "js", "runtime": "node", "code": NODE})).await;
    check_runs(&t, "js", "node log").await;
    set(&t, "js", json!({"handler": "handler.boom"})).await;
    let r = invoke(&t, "js", json!({})).await;
    assert_eq!(r["error"]["message"], "TypeError: bad type", "{r}");
    assert!(r["error"]["stack"].as_str().unwrap().contains("handler.js"));
    delete(&t, "js").await;

    deploy(&t, json!({"name": "sh", "runtime": "bash", "code": BASH})).await;
    check_runs(&t, "sh", "bash log").await;
    set(&t, "sh", json!({"handler": "handler.fails"})).await;
    let r = invoke(&t, "sh", json!({})).await;
    assert!(
        r["error"]["message"].as_str().unwrap().contains("status 3"),
        "{r}"
    );
    assert!(r["logs"].as_str().unwrap().contains("going down"), "{r}");
    delete(&t, "sh").await;

    host.shutdown().await;
}

const RUST: &str = r##"
static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

pub fn handler(event: &str, context: &Context) -> Result<String, String> {
    let calls = CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    println!("rust log {}", context.invocation_id);
    if event.contains("fail") {
        return Err(format!("refused {event}"));
    }
    Ok(format!(r#"{{"calls":{calls},"event":{event},"fn":"{}"}}"#, context.function_name))
}
"##;

#[tokio::test]
async fn rust_functions_compile_at_deploy_and_run() {
    let t = TestApp::spawn(common::Db::Sqlite).await;
    let host = start_host(&t, AgentConfig::DEFAULT_BOOT_TIMEOUT).await;
    check_compiled(
        &t,
        json!({"name": "rust", "runtime": "rust", "code": RUST, "mode": "persistent"}),
        "pub fn handler( {",
        "function.rs",
        "refused \"fail\"",
    )
    .await;
    set(&t, "rust", json!({"mode": "process"})).await;
    for _ in 0..2 {
        let r = invoke(&t, "rust", json!({})).await;
        assert_eq!(r["output"]["calls"], 1, "a fresh process each call: {r}");
    }
    delete(&t, "rust").await;
    host.shutdown().await;
}

const GO: &str = r#"package main

import (
	"encoding/json"
	"errors"
	"fmt"
)

var calls = 0

func Handler(event json.RawMessage, ctx Context) (any, error) {
	calls++
	fmt.Println("go log", ctx.InvocationID)
	var e any
	if err := json.Unmarshal(event, &e); err != nil {
		return nil, err
	}
	if e == "fail" {
		return nil, errors.New("refused")
	}
	return map[string]any{"calls": calls, "event": e, "fn": ctx.FunctionName}, nil
}
"#;

#[tokio::test]
async fn go_functions_compile_at_deploy_and_run() {
    let t = TestApp::spawn(common::Db::Sqlite).await;
    let host = start_host(&t, AgentConfig::DEFAULT_BOOT_TIMEOUT).await;
    check_compiled(
        &t,
        json!({"name": "go", "runtime": "go", "code": GO, "mode": "persistent"}),
        "package main\nfunc Handler( {",
        "handler.go",
        "refused",
    )
    .await;
    delete(&t, "go").await;
    host.shutdown().await;
}

const JAVA: &str = r#"
public class Greeter {
    static int calls = 0;

    public static String handle(String event, Context context) {
        calls++;
        System.out.println("java log " + context.invocationId);
        if (event.contains("fail")) {
            throw new IllegalArgumentException("refused");
        }
        return "{\"calls\":" + calls + ",\"event\":" + event + ",\"fn\":\"" + context.functionName + "\"}";
    }
}
"#;

#[tokio::test]
async fn java_functions_compile_at_deploy_and_run_on_a_jre() {
    let t = TestApp::spawn(common::Db::Sqlite).await;
    let host = start_host(&t, AgentConfig::DEFAULT_BOOT_TIMEOUT).await;
    build(&t, "java").await;
    check_compiled(
        &t,
        json!({"name": "java", "runtime": "java", "code": JAVA, "handler": "Greeter.handle",
               "memory_mib": 256, "timeout_s": 60}),
        "public class Greeter { oops }",
        "Greeter.java",
        "java.lang.IllegalArgumentException: refused",
    )
    .await;
    let r = invoke(&t, "java", json!("fail")).await;
    assert!(r["error"]["stack"]
        .as_str()
        .unwrap()
        .contains("Greeter.handle"));
    delete(&t, "java").await;
    host.shutdown().await;
}
