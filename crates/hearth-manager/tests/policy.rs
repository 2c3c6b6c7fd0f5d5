//! Role checks for every route, table-driven. The routes come from the OpenAPI document the
//! server generates, and every one must appear in `EXPECTED`: a route added later without a
//! decision here fails this test.

mod common;

use common::{TestApp, ADMIN_PASSWORD};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// (method, route, who may call it): "public", "viewer", "operator" or "admin".
const EXPECTED: &[(&str, &str, &str)] = &[
    ("POST", "/v1/auth/login", "public"),
    ("POST", "/v1/auth/logout", "viewer"),
    ("GET", "/v1/auth/whoami", "viewer"),
    ("GET", "/v1/users", "admin"),
    ("POST", "/v1/users", "admin"),
    ("GET", "/v1/users/{id}", "admin"),
    ("PATCH", "/v1/users/{id}", "admin"),
    ("DELETE", "/v1/users/{id}", "admin"),
    ("GET", "/v1/api-keys", "viewer"),
    ("POST", "/v1/api-keys", "operator"),
    ("DELETE", "/v1/api-keys/{id}", "operator"),
    ("GET", "/v1/hosts", "viewer"),
    ("GET", "/v1/hosts/{id}", "viewer"),
    ("DELETE", "/v1/hosts/{id}", "admin"),
    ("POST", "/v1/hosts/{id}/cordon", "admin"),
    ("POST", "/v1/hosts/{id}/uncordon", "admin"),
    ("POST", "/v1/hosts/{id}/drain", "admin"),
    ("POST", "/v1/hosts/join-tokens", "admin"),
    ("GET", "/v1/vms", "viewer"),
    ("POST", "/v1/vms", "operator"),
    ("GET", "/v1/vms/{id}", "viewer"),
    ("PATCH", "/v1/vms/{id}", "operator"),
    ("DELETE", "/v1/vms/{id}", "operator"),
    ("POST", "/v1/vms/{id}/start", "operator"),
    ("POST", "/v1/vms/{id}/stop", "operator"),
    ("POST", "/v1/vms/{id}/reboot", "operator"),
    ("POST", "/v1/vms/{id}/pause", "operator"),
    ("POST", "/v1/vms/{id}/resume", "operator"),
    ("POST", "/v1/vms/{id}/ports", "operator"),
    ("DELETE", "/v1/vms/{id}/ports/{host_port}", "operator"),
    ("GET", "/v1/vms/{id}/wait", "viewer"),
    ("POST", "/v1/vms/{id}/exec", "operator"),
    ("GET", "/v1/vms/{id}/console", "viewer"),
    ("GET", "/v1/vms/{id}/shell", "operator"),
    ("GET", "/v1/vms/{id}/metrics", "viewer"),
    ("GET", "/v1/images", "viewer"),
    ("POST", "/v1/vms/{id}/snapshots", "operator"),
    ("GET", "/v1/snapshots", "viewer"),
    ("GET", "/v1/snapshots/{id}", "viewer"),
    ("DELETE", "/v1/snapshots/{id}", "operator"),
    ("POST", "/v1/snapshots/{id}/restore", "operator"),
    ("POST", "/v1/images", "operator"),
    ("POST", "/v1/images/builds", "operator"),
    ("GET", "/v1/images/builds/{name}", "viewer"),
    ("GET", "/v1/networks", "viewer"),
    ("POST", "/v1/networks", "admin"),
    ("GET", "/v1/networks/{id}", "viewer"),
    ("DELETE", "/v1/networks/{id}", "admin"),
    ("GET", "/v1/volumes", "viewer"),
    ("POST", "/v1/volumes", "operator"),
    ("GET", "/v1/volumes/{id}", "viewer"),
    ("PATCH", "/v1/volumes/{id}", "operator"),
    ("DELETE", "/v1/volumes/{id}", "operator"),
    ("POST", "/v1/volumes/{id}/attach", "operator"),
    ("POST", "/v1/volumes/{id}/detach", "operator"),
    ("GET", "/v1/templates", "viewer"),
    ("POST", "/v1/templates", "operator"),
    ("GET", "/v1/templates/{id}", "viewer"),
    ("DELETE", "/v1/templates/{id}", "operator"),
    ("POST", "/v1/templates/{id}/instantiate", "operator"),
    ("GET", "/v1/runtimes", "viewer"),
    ("GET", "/v1/runtimes/{name}", "viewer"),
    ("POST", "/v1/runtimes/{name}/build", "operator"),
    ("GET", "/v1/functions", "viewer"),
    ("POST", "/v1/functions", "operator"),
    ("GET", "/v1/functions/{name}", "viewer"),
    ("PATCH", "/v1/functions/{name}", "operator"),
    ("DELETE", "/v1/functions/{name}", "operator"),
    ("POST", "/v1/functions/{name}/invoke", "operator"),
    ("GET", "/v1/functions/{name}/logs", "viewer"),
    ("GET", "/v1/functions/{name}/metrics", "viewer"),
    ("GET", "/v1/invocations/{id}", "viewer"),
    ("GET", "/v1/functions/{name}/code", "operator"),
    ("GET", "/v1/stats/invocations", "viewer"),
    ("GET", "/v1/functions/{name}/schedules", "viewer"),
    ("POST", "/v1/functions/{name}/schedules", "operator"),
    ("DELETE", "/v1/functions/{name}/schedules/{id}", "operator"),
    ("GET", "/v1/functions/{name}/versions", "viewer"),
    ("POST", "/v1/functions/{name}/versions", "operator"),
    ("GET", "/v1/functions/{name}/aliases", "viewer"),
    ("PUT", "/v1/functions/{name}/aliases/{alias}", "operator"),
    ("DELETE", "/v1/functions/{name}/aliases/{alias}", "operator"),
    ("GET", "/v1/secrets", "viewer"),
    ("PUT", "/v1/secrets/{name}", "operator"),
    ("DELETE", "/v1/secrets/{name}", "operator"),
    ("GET", "/v1/events", "viewer"),
    ("GET", "/healthz", "public"),
    ("GET", "/readyz", "public"),
    ("GET", "/v1/cluster/ca", "public"),
    ("GET", "/metrics", "viewer"),
];

fn rank(role: &str) -> u8 {
    match role {
        "public" => 0,
        "viewer" => 1,
        "operator" => 2,
        "admin" => 3,
        other => panic!("unknown role {other}"),
    }
}

#[tokio::test]
async fn every_route_enforces_its_role() {
    let t = TestApp::spawn(common::Db::Sqlite).await;
    let doc = hearth_manager::http::openapi();
    let mut routes = Vec::new();
    for (path, item) in &doc.paths.paths {
        for (method, op) in [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PATCH", &item.patch),
            ("PUT", &item.put),
            ("DELETE", &item.delete),
        ] {
            if op.is_some() {
                routes.push((method.to_string(), path.clone()));
            }
        }
    }
    for (m, p) in &routes {
        assert!(
            EXPECTED.iter().any(|(em, ep, _)| em == m && ep == p),
            "route {m} {p} has no entry in EXPECTED: decide who may call it"
        );
    }
    for (m, p, _) in EXPECTED {
        assert!(
            routes.iter().any(|(rm, rp)| rm == m && rp == p),
            "EXPECTED names {m} {p}, which the API does not have"
        );
    }

    t.user_token("vera", "viewer").await;
    t.user_token("otto", "operator").await;
    let people = [("viewer", "vera"), ("operator", "otto"), ("admin", "admin")];
    for (method, route, who) in EXPECTED {
        let path = route
            .replace("{id}", "00000000-0000-0000-0000-000000000000")
            .replace("{name}", "no-such-thing")
            .replace("{alias}", "live");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let body = matches!(method, Method::POST | Method::PATCH | Method::PUT).then(|| json!({}));

        let (s, b) = t.call(method.clone(), &path, None, body.clone()).await;
        if *who == "public" {
            assert!(
                s != StatusCode::UNAUTHORIZED && s != StatusCode::FORBIDDEN,
                "{method} {route} anonymous: {s} {b}"
            );
            continue;
        }
        assert_eq!(
            s,
            StatusCode::UNAUTHORIZED,
            "{method} {route} without a token: {b}"
        );
        assert_eq!(b["error"]["code"], "unauthenticated");

        for (role, user) in people {
            // A fresh session per call, so logout can't end the one the next call uses.
            let password = if user == "admin" {
                ADMIN_PASSWORD.to_string()
            } else {
                format!("{user}-password")
            };
            let token = t.login(user, &password).await;
            let (s, b) = t
                .call(method.clone(), &path, Some(&token), body.clone())
                .await;
            if rank(role) < rank(who) {
                assert_eq!(s, StatusCode::FORBIDDEN, "{method} {route} as {role}: {b}");
                assert_eq!(b["error"]["code"], "forbidden");
            } else {
                assert!(
                    s != StatusCode::UNAUTHORIZED && s != StatusCode::FORBIDDEN,
                    "{method} {route} as {role}: {s} {b}"
                );
            }
        }
    }
    t.shutdown().await;
}
