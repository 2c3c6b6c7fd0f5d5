//! Agents joining over the real gRPC registry: registration, heartbeats, down detection,
//! identity across restarts, cordoning, removal, and the manager calling the agent back.

mod common;

use std::time::Duration;

use common::{assert_error, eventually, TestApp};
use hearth_agent::AgentConfig;
use reqwest::StatusCode;
use serde_json::json;

fn agent_config(t: &TestApp, dir: &std::path::Path, token: Option<String>) -> AgentConfig {
    AgentConfig {
        manager_url: t.url.clone(),
        join_token: token.map(Into::into),
        data_dir: dir.to_path_buf(),
        images_dir: Some(common::shared_images_dir()),
        listen: "127.0.0.1:0".parse().unwrap(),
        advertise: None,
        manager_ca: None,
        boot_timeout: AgentConfig::DEFAULT_BOOT_TIMEOUT,
        accel: hearth_agent::accel::AccelMode::Tcg,
        manage_networks: false,
        netns: None,
        labels: Default::default(),
    }
}

async fn host_status(t: &TestApp, id: &str) -> String {
    let (_, h) = t.get(&format!("/v1/hosts/{id}")).await;
    h["status"].as_str().unwrap_or("").to_string()
}

on_both_databases!(agents_join_heartbeat_and_go_down, |db| async move {
    let t = TestApp::spawn(db).await;
    let token = t.join_token().await;
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let a1 = hearth_agent::start(agent_config(&t, d1.path(), Some(token.clone())))
        .await
        .unwrap();
    let a2 = hearth_agent::start(agent_config(&t, d2.path(), Some(token.clone())))
        .await
        .unwrap();
    assert_ne!(a1.host_id, a2.host_id);

    let (s, hosts) = t.get("/v1/hosts").await;
    assert_eq!(s, StatusCode::OK);
    let items = hosts["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{hosts}");
    for h in items {
        assert_eq!(h["status"], "up");
        assert!(h["capacity"]["vcpus"].as_u64().unwrap() >= 1);
        assert!(h["capacity"]["memory_mib"].as_u64().unwrap() > 0);
        let accels: Vec<_> = h["accelerators"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap())
            .collect();
        assert!(accels.contains(&"kvm") && accels.contains(&"tcg"));
        assert_eq!(h["vmms"].as_array().unwrap().len(), 3);
    }

    // Heartbeats keep moving last_heartbeat_at.
    let (_, before) = t.get(&format!("/v1/hosts/{}", a1.host_id)).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (_, after) = t.get(&format!("/v1/hosts/{}", a1.host_id)).await;
    assert_ne!(before["last_heartbeat_at"], after["last_heartbeat_at"]);

    // The manager reaches the agent through its RPC API, with the agent's token.
    let client = t.app.host_client(&a1.host_id).await.unwrap();
    let info = client.host_info().await.expect("GetHostInfo over RPC");
    assert!(info.capacity.vcpus >= 1);

    // Stop agent 1: it goes down; agent 2 stays up.
    let id1 = a1.host_id.clone();
    a1.shutdown().await;
    eventually(Duration::from_secs(10), "host 1 down", || async {
        host_status(&t, &id1).await == "down"
    })
    .await;
    assert_eq!(host_status(&t, &a2.host_id).await, "up");

    // Restarted on the same data dir, without a token: the same host, up again.
    let a1 = hearth_agent::start(agent_config(&t, d1.path(), None))
        .await
        .unwrap();
    assert_eq!(a1.host_id, id1);
    // Up again with its first heartbeat, which says which VMs it still runs (registering
    // again does not count: the manager must not take its old VM states for current).
    eventually(Duration::from_secs(5), "host 1 up again", || async {
        host_status(&t, &id1).await == "up"
    })
    .await;
    let (_, hosts) = t.get("/v1/hosts").await;
    assert_eq!(
        hosts["items"].as_array().unwrap().len(),
        2,
        "no duplicate host"
    );

    a1.shutdown().await;
    a2.shutdown().await;
    t.shutdown().await;
});

#[tokio::test]
async fn a_bad_join_token_is_refused_with_a_clear_error() {
    let t = TestApp::spawn(common::Db::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let err = hearth_agent::start(agent_config(
        &t,
        dir.path(),
        Some("hj_not-a-real-token".into()),
    ))
    .await
    .err()
    .expect("a bad token must be refused");
    assert!(
        format!("{err:#}").contains("join token is invalid"),
        "{err:#}"
    );
    let err = hearth_agent::start(agent_config(&t, dir.path(), None))
        .await
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("--join-token"), "{err:#}");
    let (_, hosts) = t.get("/v1/hosts").await;
    assert!(hosts["items"].as_array().unwrap().is_empty());
    t.shutdown().await;
}

/// Agents serve TLS with a certificate for their own host id, from the cluster CA, and
/// still want the manager's token on every call. (The manager's own calls over that TLS
/// are what every VM test makes.)
#[tokio::test]
async fn the_agent_serves_tls_for_its_own_name_and_wants_its_token() {
    use hearth_agent_api::{pb, tls, with_bearer, AgentClient};
    use tonic::transport::Endpoint;
    let t = TestApp::spawn(common::Db::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let a = hearth_agent::start(agent_config(&t, dir.path(), Some(t.join_token().await)))
        .await
        .unwrap();
    let (_, h) = t.get(&format!("/v1/hosts/{}", a.host_id)).await;
    assert_eq!(h["address"], format!("https://{}", a.addr), "{h}");
    // The CA is public, with no credentials.
    let ca = reqwest::get(format!("{}/v1/cluster/ca", t.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    let channel = |name: Option<String>| {
        let ep = Endpoint::from_shared(format!("https://{}", a.addr))
            .unwrap()
            .tls_config(tls::client_config(&ca, name.as_deref()))
            .unwrap();
        async move { ep.connect().await }
    };
    // Its own name: the TLS handshake succeeds, and the token is still needed.
    let mut client = AgentClient::new(
        channel(Some(tls::agent_server_name(&a.host_id)))
            .await
            .unwrap(),
    );
    let err = client
        .get_host_info(with_bearer(pb::GetHostInfoRequest {}, "wrong"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let err = client
        .get_host_info(pb::GetHostInfoRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    // Its certificate does not pass for another host's name, nor for its address.
    let other = channel(Some(tls::agent_server_name("another-host"))).await;
    assert!(
        other.is_err(),
        "a certificate for another host was accepted"
    );
    let by_ip = channel(None).await;
    assert!(
        by_ip.is_err(),
        "the certificate passed for the bare address"
    );
    // Plain HTTP/2 gets nowhere.
    let plain = Endpoint::from_shared(format!("http://{}", a.addr))
        .unwrap()
        .connect()
        .await;
    if let Ok(ch) = plain {
        let err = AgentClient::new(ch)
            .get_host_info(pb::GetHostInfoRequest {})
            .await
            .unwrap_err();
        assert_ne!(
            err.code(),
            tonic::Code::Unauthenticated,
            "plain HTTP reached the service"
        );
    }
    a.shutdown().await;
    t.shutdown().await;
}

#[tokio::test]
async fn one_agent_cannot_act_as_another_host() {
    use hearth_agent_api::{pb, with_bearer, RegistryClient};
    let t = TestApp::spawn(common::Db::Sqlite).await;
    let token = t.join_token().await;
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a1 = hearth_agent::start(agent_config(&t, d1.path(), Some(token.clone())))
        .await
        .unwrap();
    let a2 = hearth_agent::start(agent_config(&t, d2.path(), Some(token)))
        .await
        .unwrap();
    let secret2 = hearth_agent::Identity::load_or_new(d2.path())
        .unwrap()
        .host_secret;
    let mut registry = RegistryClient::connect(t.url.clone()).await.unwrap();
    // Host 2's secret does not speak for host 1: not its heartbeat, nor its VMs.
    let err = registry
        .heartbeat(with_bearer(
            pb::HeartbeatRequest {
                host_id: a1.host_id.clone(),
                info: None,
                vms: vec![],
            },
            &secret2,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    let err = registry
        .report_vm(with_bearer(
            pb::ReportVmRequest {
                host_id: a1.host_id.clone(),
                vm: Some(pb::VmStatus {
                    id: "x".into(),
                    state: "failed".into(),
                    ..Default::default()
                }),
            },
            &secret2,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    // Registering as host 1 with host 2's secret and no token is refused too.
    let err = registry
        .register(pb::RegisterRequest {
            host_id: a1.host_id.clone(),
            host_secret: secret2,
            address: "http://127.0.0.1:1".into(),
            info: Some(pb::HostInfo::default()),
            agent_token: "t".repeat(40),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.code(),
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
        ),
        "{err}"
    );
    // Host 1 is as it was.
    let (_, h) = t.get(&format!("/v1/hosts/{}", a1.host_id)).await;
    assert_ne!(h["address"], "http://127.0.0.1:1", "{h}");
    a1.shutdown().await;
    a2.shutdown().await;
    t.shutdown().await;
}

on_both_databases!(cordon_uncordon_remove, |db| async move {
    let t = TestApp::spawn(db).await;
    let dir = tempfile::tempdir().unwrap();
    let a = hearth_agent::start(agent_config(&t, dir.path(), Some(t.join_token().await)))
        .await
        .unwrap();
    let id = a.host_id.clone();
    let (s, h) = t.post(&format!("/v1/hosts/{id}/cordon"), json!({})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["status"], "cordoned");
    assert_eq!(h["cordoned"], true);
    let (_, h) = t.post(&format!("/v1/hosts/{id}/uncordon"), json!({})).await;
    assert_eq!(h["status"], "up");
    let (s, b) = t.post("/v1/hosts/nope/cordon", json!({})).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "not_found");
    let (s, b) = t
        .post("/v1/hosts/join-tokens", json!({"ttl_minutes": 0}))
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "bad_request");
    let (s, _) = t
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/hosts/{id}"),
            Some(&t.admin_token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = t.get(&format!("/v1/hosts/{id}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    a.shutdown().await;
    t.shutdown().await;
});
