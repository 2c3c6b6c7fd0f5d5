//! Test harness: the real manager on port 0 with a fresh database, on SQLite or PostgreSQL.
//!
//! PostgreSQL tests need `HEARTH_TEST_POSTGRES_URL` (an admin URL of a throwaway server);
//! `make test` starts one and sets it. Each test gets a database of its own.

#![allow(dead_code)]

pub mod host;
pub mod netns;

use std::time::Duration;

use hearth_manager::{Application, ManagerConfig};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";

#[derive(Debug, Clone, Copy)]
pub enum Db {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub url: String,
    pub app: hearth_manager::App,
    pub http: reqwest::Client,
    pub admin_token: String,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// A fresh PostgreSQL database URL on the test server.
/// One images directory for every test agent, so the default image and the runtime root
/// filesystems are built once per checkout (`HEARTH_TEST_IMAGES_DIR` overrides it).
pub fn shared_images_dir() -> std::path::PathBuf {
    std::env::var_os("HEARTH_TEST_IMAGES_DIR")
        .map(Into::into)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/hearth-test-images")
        })
}

pub async fn fresh_postgres_url() -> String {
    use sqlx::Connection;
    let admin = std::env::var("HEARTH_TEST_POSTGRES_URL").expect(
        "HEARTH_TEST_POSTGRES_URL is not set: run the suite with `make test`, which starts a \
         PostgreSQL server for it",
    );
    let name = format!("hearth_test_{}", uuid_simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connecting to the test PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("creating a test database");
    conn.close().await.ok();
    let (base, _) = admin.rsplit_once('/').expect("URL with a database name");
    format!("{base}/{name}")
}

fn uuid_simple() -> String {
    hearth_types::new_id().replace('-', "")
}

impl TestApp {
    pub async fn spawn(db: Db) -> TestApp {
        Self::spawn_with(db, |_| {}).await
    }

    pub async fn spawn_with(db: Db, tweak: impl FnOnce(&mut ManagerConfig)) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ManagerConfig::for_data_dir(dir.path());
        config.admin_password = Some(ADMIN_PASSWORD.to_string().into());
        config.heartbeat_interval_ms = 200;
        config.host_down_after_ms = 1500;
        if let Db::Postgres = db {
            config.database_url = Some(fresh_postgres_url().await.into());
        }
        tweak(&mut config);
        let application = Application::build(config).await.expect("manager starts");
        let url = application.url();
        let app = application.app().clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(application.run_until(async {
            let _ = rx.await;
        }));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let mut t = TestApp {
            url,
            app,
            http,
            admin_token: String::new(),
            dir,
            stop: Some(tx),
            server: Some(server),
        };
        t.admin_token = t.login("admin", ADMIN_PASSWORD).await;
        t
    }

    pub async fn login(&self, username: &str, password: &str) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                "/v1/auth/login",
                None,
                Some(json!({"username": username, "password": password})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "login as {username}: {body}");
        body["token"].as_str().unwrap().to_string()
    }

    /// Creates a user with `role` and returns a session token for them.
    pub async fn user_token(&self, username: &str, role: &str) -> String {
        let password = format!("{username}-password");
        let (s, b) = self
            .call(
                Method::POST,
                "/v1/users",
                Some(&self.admin_token),
                Some(json!({"username": username, "password": password, "role": role})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        self.login(username, &password).await
    }

    /// One request; returns the status and the body as JSON (`Value::Null` when empty,
    /// a string when not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{}", self.url, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(&self.admin_token), None)
            .await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(&self.admin_token), Some(body))
            .await
    }

    pub async fn delete(&self, path: &str) -> StatusCode {
        self.call(Method::DELETE, path, Some(&self.admin_token), None)
            .await
            .0
    }

    pub async fn join_token(&self) -> String {
        let (s, b) = self.post("/v1/hosts/join-tokens", json!({})).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        b["token"].as_str().unwrap().to_string()
    }

    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(s) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), s).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
        }
    }
}

/// Asserts an error response has the documented shape and code.
pub fn assert_error(status: StatusCode, body: &Value, want: StatusCode, code: &str) {
    assert_eq!(status, want, "body: {body}");
    assert_eq!(body["error"]["code"], code, "body: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error without a message: {body}"
    );
}

/// Polls `f` every 100 ms until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Defines one async test per database backend.
#[macro_export]
macro_rules! on_both_databases {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test]
            async fn sqlite() {
                ($body)(common::Db::Sqlite).await
            }
            #[tokio::test]
            async fn postgres() {
                ($body)(common::Db::Postgres).await
            }
        }
    };
}

/// Waits (up to 150 s) until the VM is in `state`, through the API's own wait route, and
/// returns it; any other answer fails the test.
pub async fn wait_vm(t: &TestApp, id: &str, state: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    loop {
        let (s, b) = t
            .get(&format!("/v1/vms/{id}/wait?state={state}&timeout_s=20"))
            .await;
        if s == StatusCode::OK {
            return b;
        }
        assert!(
            s == StatusCode::REQUEST_TIMEOUT && std::time::Instant::now() < deadline,
            "waiting for {id} to be {state}: {s} {b}"
        );
    }
}

/// Runs `sh -c script` in the VM, asserts it succeeded, and returns its stdout.
pub async fn sh(t: &TestApp, vm: &str, script: &str) -> String {
    let (s, b) = t
        .post(
            &format!("/v1/vms/{vm}/exec"),
            json!({"command": ["sh", "-c", script]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["exit_code"], 0, "{script}: {b}");
    b["stdout"].as_str().unwrap().to_string()
}

/// The VMs serving functions' pools.
pub async fn fn_vms(t: &TestApp) -> Vec<Value> {
    let (_, vms) = t.get("/v1/vms").await;
    vms["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["function_id"].is_string())
        .cloned()
        .collect()
}

/// GETs `url` until its body contains `want` (10 s at most) and returns the last body
/// ("" when nothing answered).
pub async fn fetch_until(url: &str, want: &str) -> String {
    let mut body = String::new();
    for _ in 0..50 {
        if let Ok(r) = reqwest::get(url).await {
            body = r.text().await.unwrap_or_default();
            if body.contains(want) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    body
}

/// A port on the host's loopback that nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
