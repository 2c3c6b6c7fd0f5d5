//! Health, readiness, metrics, the audit log, paging, and the committed OpenAPI document.

mod common;

use common::{assert_error, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn openapi_document_matches_the_committed_copy() {
    let generated = hearth_manager::http::openapi().to_pretty_json().unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        generated.trim() == committed.trim(),
        "docs/openapi.json is out of date: run `make openapi` and commit it"
    );
}

on_both_databases!(health_ready_and_metrics, |db| async move {
    let t = TestApp::spawn(db).await;
    let (s, b) = t.call(Method::GET, "/healthz", None, None).await;
    assert_eq!((s, b["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (s, b) = t.call(Method::GET, "/readyz", None, None).await;
    assert_eq!((s, b["status"].as_str()), (StatusCode::OK, Some("ready")));
    let (s, b) = t.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(b["paths"]["/v1/users"].is_object());
    let docs = t.http.get(format!("{}/docs/", t.url)).send().await.unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(docs.text().await.unwrap().contains("swagger"));

    t.get("/v1/users").await;
    t.get("/v1/users/nobody").await;
    let (s, text) = t.get("/metrics").await;
    assert_eq!(s, StatusCode::OK);
    let text = text.as_str().unwrap();
    assert!(
        text.contains(
            r#"hearth_http_requests_total{method="GET",route="/v1/users",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"route="/v1/users/{id}",status="404""#),
        "{text}"
    );
    assert!(
        text.contains("hearth_http_request_duration_seconds_bucket"),
        "{text}"
    );
    t.shutdown().await;
});

on_both_databases!(audit_log_records_mutations_with_outcome, |db| async move {
    let t = TestApp::spawn(db).await;
    t.post(
        "/v1/users",
        json!({"username": "dora", "password": "dora-password", "role": "viewer"}),
    )
    .await;
    t.post(
        "/v1/users",
        json!({"username": "dora", "password": "dora-password", "role": "viewer"}),
    )
    .await;
    t.call(
        Method::POST,
        "/v1/auth/login",
        None,
        Some(json!({"username": "mallory", "password": "guessing"})),
    )
    .await;
    t.call(Method::DELETE, "/v1/users/dora", None, None).await;
    t.get("/v1/users").await; // reads are not audited

    let (s, page) = t.get("/v1/events?limit=10").await;
    assert_eq!(s, StatusCode::OK);
    let events = page["items"].as_array().unwrap();
    let summary: Vec<(String, String, u64, String)> = events
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_string(),
                e["action"].as_str().unwrap().to_string(),
                e["status"].as_u64().unwrap(),
                e["result"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = |actor: &str, action: &str, status: u64, result: &str| {
        (
            actor.to_string(),
            action.to_string(),
            status,
            result.to_string(),
        )
    };
    // Newest first.
    assert_eq!(
        summary[0],
        want("anonymous", "DELETE /v1/users/{id}", 401, "error")
    );
    assert_eq!(
        summary[1],
        want("mallory", "POST /v1/auth/login", 401, "error")
    );
    assert_eq!(summary[2], want("admin", "POST /v1/users", 409, "error"));
    assert_eq!(summary[3], want("admin", "POST /v1/users", 201, "ok"));
    assert!(events[0]["request_id"]
        .as_str()
        .is_some_and(|r| !r.is_empty()));
    assert!(!events
        .iter()
        .any(|e| e["action"].as_str().unwrap().starts_with("GET")));
    t.shutdown().await;
});

on_both_databases!(lists_page_with_cursors, |db| async move {
    let t = TestApp::spawn(db).await;
    for i in 0..4 {
        let (s, _) = t
            .post(
                "/v1/users",
                json!({"username": format!("u{i}"), "password": "password-123", "role": "viewer"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/users?limit=2&cursor={c}"),
            None => "/v1/users?limit=2".to_string(),
        };
        let (s, page) = t.get(&path).await;
        assert_eq!(s, StatusCode::OK);
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(
            items
                .iter()
                .map(|u| u["username"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ["admin", "u0", "u1", "u2", "u3"]);
    let (s, b) = t.get("/v1/users?limit=0").await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    let (s, b) = t.get("/v1/users?limit=abc").await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    let (s, b) = t.get("/v1/users?bogus=1").await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    t.shutdown().await;
});

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let t = TestApp::spawn(common::Db::Sqlite).await;
    let (s, b) = t.get("/v1/nothing-here").await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found");
    let (s, b) = t
        .call(
            Method::PUT,
            "/v1/users",
            Some(&t.admin_token),
            Some(json!({})),
        )
        .await;
    assert_error(s, &b, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    t.shutdown().await;
}
