//! Authentication, sessions, users and API keys, end to end over HTTP on both databases.

mod common;

use std::time::Duration;

use common::{assert_error, TestApp, ADMIN_PASSWORD};
use reqwest::{Method, StatusCode};
use serde_json::json;

on_both_databases!(login_logout_and_whoami, |db| async move {
    let t = TestApp::spawn(db).await;
    let (s, me) = t.get("/v1/auth/whoami").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["username"], "admin");
    assert_eq!(me["role"], "admin");

    let (s, b) = t
        .call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({"username": "admin", "password": "nope-nope"})),
        )
        .await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "unauthenticated");
    let (s, b) = t
        .call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({"username": "ghost", "password": "whatever1"})),
        )
        .await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "unauthenticated");

    let token = t.login("admin", ADMIN_PASSWORD).await;
    let (s, _) = t
        .call(Method::POST, "/v1/auth/logout", Some(&token), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = t
        .call(Method::GET, "/v1/auth/whoami", Some(&token), None)
        .await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "unauthenticated");
    t.shutdown().await;
});

on_both_databases!(sessions_expire, |db| async move {
    let t = TestApp::spawn_with(db, |c| c.session_ttl_s = 1).await;
    let token = t.login("admin", ADMIN_PASSWORD).await;
    let (s, _) = t
        .call(Method::GET, "/v1/auth/whoami", Some(&token), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (s, b) = t
        .call(Method::GET, "/v1/auth/whoami", Some(&token), None)
        .await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "unauthenticated");
    t.shutdown().await;
});

#[tokio::test]
async fn repeated_failed_logins_are_slowed_down() {
    let t = TestApp::spawn(common::Db::Sqlite).await;
    for _ in 0..5 {
        let (s, _) = t
            .call(
                Method::POST,
                "/v1/auth/login",
                None,
                Some(json!({"username": "admin", "password": "wrong-password"})),
            )
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    // Now even the right password waits.
    let resp = t
        .http
        .post(format!("{}/v1/auth/login", t.url))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_requests");
    // Other users are not affected.
    let (s, _) = t
        .call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({"username": "someone", "password": "whatever1"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    tokio::time::sleep(Duration::from_millis(1100 * retry)).await;
    t.login("admin", ADMIN_PASSWORD).await;
    t.shutdown().await;
}

on_both_databases!(users_crud_and_bad_input, |db| async move {
    let t = TestApp::spawn(db).await;
    let (s, u) = t
        .post(
            "/v1/users",
            json!({"username": "bob", "password": "bob-password", "role": "operator"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{u}");
    assert_eq!(u["role"], "operator");
    assert!(u.get("password_hash").is_none() && u.get("password").is_none());

    // Duplicates, bad roles, short passwords, unknown fields, wrong types, bad JSON.
    let (s, b) = t
        .post(
            "/v1/users",
            json!({"username": "bob", "password": "other-password", "role": "viewer"}),
        )
        .await;
    assert_error(s, &b, StatusCode::CONFLICT, "conflict");
    let (s, b) = t
        .post(
            "/v1/users",
            json!({"username": "carol", "password": "carol-password", "role": "root"}),
        )
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    let (s, b) = t
        .post(
            "/v1/users",
            json!({"username": "carol", "password": "short", "role": "viewer"}),
        )
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("at least 8"));
    let (s, b) = t.post("/v1/users", json!({"username": "carol", "password": "carol-password", "role": "viewer", "admin": true})).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("unknown field"));
    let (s, b) = t
        .post(
            "/v1/users",
            json!({"username": 42, "password": "carol-password", "role": "viewer"}),
        )
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    let (s, b) = t
        .post(
            "/v1/users",
            json!({"username": "bad name!", "password": "carol-password", "role": "viewer"}),
        )
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    let resp = t
        .http
        .post(format!("{}/v1/users", t.url))
        .bearer_auth(&t.admin_token)
        .header("content-type", "application/json")
        .body("{\"username\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = t
        .http
        .post(format!("{}/v1/users", t.url))
        .bearer_auth(&t.admin_token)
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let huge = "x".repeat(2 * 1024 * 1024);
    let (s, b) = t
        .post(
            "/v1/users",
            json!({"username": "big", "password": huge, "role": "viewer"}),
        )
        .await;
    assert_error(s, &b, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    // None of the failures created anything.
    let (_, list) = t.get("/v1/users").await;
    let names: Vec<_> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["admin", "bob"]);

    // Get by name or id, update, delete.
    let (s, by_name) = t.get("/v1/users/bob").await;
    assert_eq!(s, StatusCode::OK);
    let (_, by_id) = t
        .get(&format!("/v1/users/{}", u["id"].as_str().unwrap()))
        .await;
    assert_eq!(by_name, by_id);
    let bob_token = t.login("bob", "bob-password").await;
    let (s, b) = t
        .call(
            Method::PATCH,
            "/v1/users/bob",
            Some(&t.admin_token),
            Some(json!({"role": "viewer", "password": "new-bob-password"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["role"], "viewer");
    let (s, _) = t
        .call(Method::GET, "/v1/auth/whoami", Some(&bob_token), None)
        .await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "a password change ends old sessions"
    );
    t.login("bob", "new-bob-password").await;
    let (s, b) = t
        .call(
            Method::PATCH,
            "/v1/users/bob",
            Some(&t.admin_token),
            Some(json!({})),
        )
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    let (s, b) = t
        .call(
            Method::DELETE,
            "/v1/users/admin",
            Some(&t.admin_token),
            None,
        )
        .await;
    assert_error(s, &b, StatusCode::CONFLICT, "conflict");
    let (s, _) = t
        .call(Method::DELETE, "/v1/users/bob", Some(&t.admin_token), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = t.get("/v1/users/bob").await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found");
    let (s, b) = t
        .call(Method::DELETE, "/v1/users/bob", Some(&t.admin_token), None)
        .await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found");
    t.shutdown().await;
});

on_both_databases!(api_keys, |db| async move {
    let t = TestApp::spawn(db).await;
    let op = t.user_token("olga", "operator").await;
    // An operator cannot mint an admin key.
    let (s, b) = t
        .call(
            Method::POST,
            "/v1/api-keys",
            Some(&op),
            Some(json!({"name": "too-strong", "role": "admin"})),
        )
        .await;
    assert_error(s, &b, StatusCode::FORBIDDEN, "forbidden");
    let (s, key) = t
        .call(
            Method::POST,
            "/v1/api-keys",
            Some(&op),
            Some(json!({"name": "ci", "role": "viewer"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{key}");
    let secret = key["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("hk_"));
    assert!(secret.starts_with(key["prefix"].as_str().unwrap()));

    // The key works, with its own (lower) role.
    let (s, me) = t
        .call(Method::GET, "/v1/auth/whoami", Some(&secret), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["role"], "viewer");
    assert_eq!(me["via"], "api_key");
    let (s, b) = t
        .call(
            Method::POST,
            "/v1/api-keys",
            Some(&secret),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_error(s, &b, StatusCode::FORBIDDEN, "forbidden");

    // Lists never show secrets; an operator sees only their keys, an admin all.
    let (_, mine) = t.call(Method::GET, "/v1/api-keys", Some(&op), None).await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 1);
    assert!(!mine.to_string().contains(&secret));
    let (_, admin_key) = t
        .post(
            "/v1/api-keys",
            json!({"name": "admin-key", "expires_in_days": 1}),
        )
        .await;
    let (_, all) = t.get("/v1/api-keys").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    let (_, mine) = t.call(Method::GET, "/v1/api-keys", Some(&op), None).await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 1);
    // Someone else's key looks missing.
    let (s, _) = t
        .call(
            Method::DELETE,
            &format!("/v1/api-keys/{}", admin_key["id"].as_str().unwrap()),
            Some(&op),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let (s, b) = t
        .post("/v1/api-keys", json!({"name": "bad", "expires_in_days": 0}))
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    let (s, b) = t.post("/v1/api-keys", json!({"name": ""})).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");

    // Revoked keys stop working at once.
    let (s, _) = t
        .call(
            Method::DELETE,
            &format!("/v1/api-keys/{}", key["id"].as_str().unwrap()),
            Some(&op),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = t
        .call(Method::GET, "/v1/auth/whoami", Some(&secret), None)
        .await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, "unauthenticated");
    let (s, _) = t
        .call(Method::GET, "/v1/auth/whoami", Some("hk_madeup"), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = t
        .call(Method::GET, "/v1/auth/whoami", Some("garbage"), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    t.shutdown().await;
});

#[tokio::test]
async fn first_admin_password_is_generated_into_a_private_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = hearth_manager::ManagerConfig::for_data_dir(dir.path());
    let app = hearth_manager::Application::build(config).await.unwrap();
    let path = dir.path().join("admin-password");
    assert_eq!(
        app.admin_password_hint.as_deref(),
        Some(path.to_str().unwrap())
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let password = std::fs::read_to_string(&path).unwrap().trim().to_string();
    assert!(password.len() >= 16);
    let app_state = app.app().clone();
    let login = app_state
        .login(hearth_types::auth::LoginRequest {
            username: "admin".into(),
            password,
        })
        .await;
    assert!(login.is_ok());
    drop(app);
    // A second start on the same data dir keeps the admin and creates nothing new.
    let config = hearth_manager::ManagerConfig::for_data_dir(dir.path());
    let again = hearth_manager::Application::build(config).await.unwrap();
    assert!(again.admin_password_hint.is_none());
}
