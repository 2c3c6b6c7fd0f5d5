//! Managed networks end to end on real TCG guests, inside network namespaces this test
//! makes (the agent builds its bridges, TAPs and NAT rules in one; a second stands for the
//! world outside): VMs on a NAT network reach each other, their gateway and the outside;
//! an isolated network reaches only itself and its gateway; a port forward on loopback
//! reaches a server in a guest; addresses are handed out once and released on delete; bad
//! input is refused and leaves nothing. Every QEMU and namespace goes when the test ends.

mod common;

use common::host::start_host_with;
use common::netns::Netns;
use common::{assert_error, fetch_until, free_port, sh, wait_vm, TestApp};
use hearth_agent::AgentConfig;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn post_ok(t: &TestApp, path: &str, body: Value) -> Value {
    let (s, b) = t.post(path, body).await;
    assert!(s.is_success(), "{path}: {s} {b}");
    b
}

/// Whether `ping` from the VM reaches `addr` (one try, bounded).
async fn pings(t: &TestApp, vm: &str, addr: &str) -> bool {
    let (s, b) = t
        .post(
            &format!("/v1/vms/{vm}/exec"),
            json!({"command": ["ping", "-c", "1", "-W", "3", addr], "timeout_s": 20}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["exit_code"] == 0
}

on_both_databases!(
    nat_and_isolated_networks_with_addresses_and_a_port_forward,
    |db| { networks_end_to_end(db) }
);

async fn networks_end_to_end(db: common::Db) {
    let ns = Netns::new("net");
    let outside = Netns::new("out");
    ns.link(&outside, "192.168.250.1/24", "192.168.250.2/24");

    let t = TestApp::spawn(db).await;
    let host = start_host_with(&t, AgentConfig::DEFAULT_BOOT_TIMEOUT, |c| {
        c.manage_networks = true;
        c.netns = Some(ns.name.clone());
    })
    .await;

    // The host may manage networks, so the default NAT network was made when it joined.
    let (_, hosts) = t.get("/v1/hosts").await;
    assert_eq!(hosts["items"][0]["networks"]["managed"], true, "{hosts}");
    let (s, default) = t.get("/v1/networks/default").await;
    assert_eq!(s, StatusCode::OK, "{default}");
    assert_eq!(default["kind"], "nat");
    assert_eq!(default["cidr"], "10.88.0.0/16");
    assert_eq!(default["gateway"], "10.88.0.1");

    // Bad networks are refused and leave nothing.
    for (body, want, why) in [
        (
            json!({"name": "o", "kind": "nat", "cidr": "10.88.7.0/24"}),
            StatusCode::CONFLICT,
            "overlaps default",
        ),
        (
            json!({"name": "o", "kind": "nat", "cidr": "10.0.0.0/8"}),
            StatusCode::CONFLICT,
            "contains default",
        ),
        (
            json!({"name": "o", "kind": "nat", "cidr": "10.90.0.5/24"}),
            StatusCode::BAD_REQUEST,
            "host bits",
        ),
        (
            json!({"name": "o", "kind": "nat", "cidr": "10.90.0.0/31"}),
            StatusCode::BAD_REQUEST,
            "too small",
        ),
        (
            json!({"name": "o", "kind": "nat", "cidr": "banana"}),
            StatusCode::BAD_REQUEST,
            "not a CIDR",
        ),
        (
            json!({"name": "o", "kind": "mesh", "cidr": "10.90.0.0/24"}),
            StatusCode::BAD_REQUEST,
            "kind",
        ),
        (
            json!({"name": "o", "kind": "bridged", "cidr": "10.90.0.0/24"}),
            StatusCode::BAD_REQUEST,
            "bridged without a bridge",
        ),
        (
            json!({"name": "o", "kind": "nat", "cidr": "10.90.0.0/24", "gateway": "10.91.0.1"}),
            StatusCode::BAD_REQUEST,
            "gateway outside",
        ),
        (
            json!({"name": "user", "kind": "nat", "cidr": "10.90.0.0/24"}),
            StatusCode::BAD_REQUEST,
            "reserved name",
        ),
        (
            json!({"name": "default", "kind": "nat", "cidr": "10.90.0.0/24"}),
            StatusCode::CONFLICT,
            "name taken",
        ),
    ] {
        let (s, b) = t.post("/v1/networks", body).await;
        assert_eq!(s, want, "{why}: {b}");
        assert!(
            b["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{why}: {b}"
        );
    }
    let (_, list) = t.get("/v1/networks").await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");

    let iso = post_ok(
        &t,
        "/v1/networks",
        json!({"name": "iso", "kind": "isolated", "cidr": "10.77.0.0/24"}),
    )
    .await;
    assert_eq!(iso["gateway"], "10.77.0.1");

    // Bad VMs are refused and leave nothing.
    let port = free_port();
    for (body, want, why) in [
        (
            json!({"name": "x", "mac": "01:00:00:00:00:01"}),
            StatusCode::BAD_REQUEST,
            "multicast MAC",
        ),
        (
            json!({"name": "x", "mac": "02:00:00:00:00"}),
            StatusCode::BAD_REQUEST,
            "short MAC",
        ),
        (
            json!({"name": "x", "network": "user", "mac": "02:00:00:00:00:01"}),
            StatusCode::BAD_REQUEST,
            "MAC on user",
        ),
        (
            json!({"name": "x", "network": "nowhere"}),
            StatusCode::NOT_FOUND,
            "no such network",
        ),
        (
            json!({"name": "x", "ports": [{"host_port": port, "guest_port": 53, "protocol": "udp"}]}),
            StatusCode::BAD_REQUEST,
            "UDP on managed",
        ),
    ] {
        let (s, b) = t.post("/v1/vms", body).await;
        assert_eq!(s, want, "{why}: {b}");
    }
    let (_, vms) = t.get("/v1/vms").await;
    assert_eq!(vms["items"], json!([]));

    // Three VMs: two on the default network (one with a MAC of its own and a forward), one
    // on the isolated one. No network named: the default.
    let a = post_ok(&t, "/v1/vms", json!({"name": "a", "disk_mib": 0})).await;
    let b = post_ok(
        &t,
        "/v1/vms",
        json!({"name": "b", "disk_mib": 0, "network": "default", "mac": "02:00:00:00:00:0B",
               "ports": [{"host_port": port, "guest_port": 8080}]}),
    )
    .await;
    let c = post_ok(
        &t,
        "/v1/vms",
        json!({"name": "c", "disk_mib": 0, "network": "iso"}),
    )
    .await;
    assert_eq!(a["network"], "default");
    assert_eq!(a["ip"], "10.88.0.2");
    assert_eq!(b["ip"], "10.88.0.3");
    assert_eq!(b["mac"], "02:00:00:00:00:0b");
    assert_eq!(c["ip"], "10.77.0.2");
    assert!(a["mac"].as_str().unwrap().starts_with("02:"), "{a}");
    for v in ["a", "b", "c"] {
        wait_vm(&t, v, "running").await;
    }
    // A MAC is one NIC's only.
    let (s, body) = t
        .post(
            "/v1/vms",
            json!({"name": "x", "mac": "02:00:00:00:00:0b", "start": false}),
        )
        .await;
    assert_error(s, &body, StatusCode::CONFLICT, "conflict");

    // The guests configured what they were given.
    let addr = sh(&t, "b", "ip -4 addr show eth0; ip link show eth0").await;
    assert!(addr.contains("10.88.0.3/16"), "{addr}");
    assert!(addr.contains("02:00:00:00:00:0b"), "{addr}");
    // The bridges and TAPs live in the agent's namespace.
    let id = |v: &Value| v["id"].as_str().unwrap().to_string();
    let tap = |v: &Value| hearth_agent::net::tap_name(&id(v));
    assert!(ns.has_link(&hearth_agent::net::bridge_name(
        default["id"].as_str().unwrap()
    )));
    assert!(ns.has_link(&tap(&a)) && ns.has_link(&tap(&c)));

    // NAT: the VMs reach each other, their gateway, and the outside (masqueraded).
    assert!(pings(&t, "a", "10.88.0.3").await, "a → b");
    assert!(pings(&t, "b", "10.88.0.2").await, "b → a");
    assert!(pings(&t, "a", "10.88.0.1").await, "a → gateway");
    assert!(pings(&t, "a", "192.168.250.2").await, "a → outside");
    // Isolated: its gateway only; no way out, and no way into the other network.
    assert!(pings(&t, "c", "10.77.0.1").await, "c → its gateway");
    assert!(
        !pings(&t, "c", "192.168.250.2").await,
        "c reached the outside"
    );
    assert!(
        !pings(&t, "c", "10.88.0.2").await,
        "c reached the NAT network"
    );
    assert!(
        !pings(&t, "a", "10.77.0.2").await,
        "a reached the isolated network"
    );

    // The forward on the host's loopback reaches a server in b.
    sh(
        &t,
        "b",
        "mkdir -p /root/www && echo hello-from-b > /root/www/index.html && httpd -p 8080 -h /root/www",
    )
    .await;
    let url = format!("http://127.0.0.1:{port}/index.html");
    assert_eq!(fetch_until(&url, "hello").await.trim(), "hello-from-b");
    // One added to the running VM works at once (the agent's own proxy), and goes when
    // removed.
    let live = free_port();
    let v = post_ok(
        &t,
        "/v1/vms/b/ports",
        json!({"host_port": live, "guest_port": 8080}),
    )
    .await;
    assert_eq!(v["ports"].as_array().unwrap().len(), 2, "{v}");
    let live_url = format!("http://127.0.0.1:{live}/index.html");
    assert_eq!(fetch_until(&live_url, "hello").await.trim(), "hello-from-b");
    let (s, v) = t
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/vms/b/ports/{live}"),
            Some(&t.admin_token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(
        reqwest::get(&live_url).await.is_err(),
        "the removed forward still answers"
    );

    // Addresses in use are not handed out again; a deleted VM's address is.
    let d = post_ok(&t, "/v1/vms", json!({"name": "d", "start": false})).await;
    assert_eq!(d["ip"], "10.88.0.4");
    assert_eq!(t.delete("/v1/vms/a").await, StatusCode::NO_CONTENT);
    assert!(!ns.has_link(&tap(&a)), "a's TAP outlived it");
    let e = post_ok(&t, "/v1/vms", json!({"name": "e", "start": false})).await;
    assert_eq!(e["ip"], "10.88.0.2");

    // A clone restored from a snapshot takes an address and a MAC of its own, and both
    // it and the original answer.
    let snap = post_ok(&t, "/v1/vms/b/snapshots", json!({"name": "b-snap"})).await;
    let clone = post_ok(
        &t,
        &format!("/v1/snapshots/{}/restore", snap["id"].as_str().unwrap()),
        json!({"name": "b2"}),
    )
    .await;
    assert_eq!(clone["ip"], "10.88.0.5", "{clone}");
    assert_ne!(clone["mac"], b["mac"], "{clone}");
    wait_vm(&t, "b2", "running").await;
    let addr = sh(&t, "b2", "ip -4 addr show eth0; ip link show eth0").await;
    assert!(
        addr.contains("10.88.0.5/16") && !addr.contains("10.88.0.3/"),
        "{addr}"
    );
    assert!(addr.contains(clone["mac"].as_str().unwrap()), "{addr}");
    assert!(pings(&t, "b2", "10.88.0.3").await, "clone → original");
    assert!(pings(&t, "b", "10.88.0.5").await, "original → clone");
    assert!(pings(&t, "b2", "192.168.250.2").await, "clone → outside");
    assert_eq!(t.delete("/v1/vms/b2").await, StatusCode::NO_CONTENT);

    // A network with VMs on it stays; without, it goes, bridge and all.
    let (s, body) = t
        .call(
            reqwest::Method::DELETE,
            "/v1/networks/iso",
            Some(&t.admin_token),
            None,
        )
        .await;
    assert_error(s, &body, StatusCode::CONFLICT, "conflict");
    assert_eq!(t.delete("/v1/vms/c").await, StatusCode::NO_CONTENT);
    assert_eq!(t.delete("/v1/networks/iso").await, StatusCode::NO_CONTENT);
    assert!(!ns.has_link(&hearth_agent::net::bridge_name(iso["id"].as_str().unwrap())));
    let (s, _) = t.get("/v1/networks/iso").await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    host.shutdown().await;
    t.shutdown().await;
}

#[tokio::test]
async fn a_host_that_may_not_manage_networks_gives_user_networking_and_says_so() {
    let t = TestApp::spawn(common::Db::Sqlite).await;
    let host = start_host_with(&t, AgentConfig::DEFAULT_BOOT_TIMEOUT, |_| {}).await;
    let (_, hosts) = t.get("/v1/hosts").await;
    let h = &hosts["items"][0];
    assert_eq!(h["networks"]["managed"], false, "{h}");
    assert!(
        h["networks"]["note"]
            .as_str()
            .unwrap()
            .contains("--manage-networks"),
        "{h}"
    );
    // No default network is made for such a host; VMs have none unless they ask.
    let (s, _) = t.get("/v1/networks/default").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let plain = post_ok(&t, "/v1/vms", json!({"name": "plain", "start": false})).await;
    assert_eq!(plain["network"], "none");

    post_ok(
        &t,
        "/v1/networks",
        json!({"name": "lan", "kind": "nat", "cidr": "10.66.0.0/24"}),
    )
    .await;
    let v = post_ok(
        &t,
        "/v1/vms",
        json!({"name": "v", "network": "lan", "start": false}),
    )
    .await;
    assert_eq!(v["network"], "user", "{v}");
    assert_eq!(v["ip"], "10.0.2.15");
    assert!(
        v["network_note"]
            .as_str()
            .unwrap()
            .contains("may not manage networks"),
        "{v}"
    );
    let (_, lan) = t.get("/v1/networks/lan").await;
    assert_eq!(lan["vm_count"], 0);
    host.shutdown().await;
    t.shutdown().await;
}
