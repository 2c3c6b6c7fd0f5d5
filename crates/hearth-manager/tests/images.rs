//! Image imports end to end: an OCI image layout the test builds itself (busybox in a
//! gzipped base layer; a second layer that deletes, replaces and adds files) is uploaded
//! over REST, boots as a real TCG guest and runs its entrypoint with its env and working
//! dir; a guest's writes leave the image as it was; bad uploads (a bad name or format, a
//! SHA-256 that differs, an oversized body, a corrupt layer, junk) get a clear 4xx and leave
//! no image behind.

mod common;

use common::host::start_host;
use common::{sh, wait_vm, TestApp};
use hearth_agent::AgentConfig;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Digest;

const BUSYBOX_APPLETS: [&str; 10] = [
    "sh", "cat", "echo", "sleep", "ls", "pwd", "mkdir", "test", "setsid", "rm",
];

fn header(size: u64, mode: u32, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

/// A layer: files `(path, contents)` (`None`: a directory), plus symlinks.
fn layer(files: &[(&str, Option<&[u8]>)], links: &[(&str, &str)], gz: bool) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, body) in files {
        match body {
            Some(data) => {
                let mut h = header(data.len() as u64, 0o755, tar::EntryType::Regular);
                b.append_data(&mut h, path, *data).unwrap();
            }
            None => {
                let mut h = header(0, 0o755, tar::EntryType::Directory);
                b.append_data(&mut h, path, std::io::empty()).unwrap();
            }
        }
    }
    for (path, target) in links {
        let mut h = header(0, 0o777, tar::EntryType::Symlink);
        b.append_link(&mut h, path, target).unwrap();
    }
    let raw = b.into_inner().unwrap();
    if !gz {
        return raw;
    }
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut e, &raw).unwrap();
    e.finish().unwrap()
}

fn digest(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

/// An OCI image layout, as a tar, of these layers and this image config.
fn oci_layout(layers: &[Vec<u8>], config: &Value) -> Vec<u8> {
    let config = serde_json::to_vec(config).unwrap();
    let mut blobs = vec![config.clone()];
    let mut descs = Vec::new();
    for l in layers {
        blobs.push(l.clone());
        descs.push(
            json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                          "digest": digest(l), "size": l.len()}),
        );
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": digest(&config), "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    blobs.push(manifest.clone());
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": digest(&manifest), "size": manifest.len(),
                       "platform": {"architecture": "amd64", "os": "linux"}}],
    }))
    .unwrap();
    let mut files: Vec<(String, Vec<u8>)> = vec![
        (
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        ("index.json".into(), index),
    ];
    for b in blobs {
        files.push((format!("blobs/sha256/{}", &digest(&b)[7..]), b));
    }
    let refs: Vec<(&str, Option<&[u8]>)> = files
        .iter()
        .map(|(p, d)| (p.as_str(), Some(d.as_slice())))
        .collect();
    layer(&refs, &[], false)
}

/// The test's image: busybox, and a top layer that deletes /etc/gone, replaces
/// /etc/motd and adds /app/hello.txt.
fn test_image() -> (Vec<u8>, Vec<u8>) {
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static (scripts/setup.sh)");
    let links: Vec<(String, String)> = BUSYBOX_APPLETS
        .iter()
        .map(|a| (format!("bin/{a}"), "busybox".to_string()))
        .collect();
    let link_refs: Vec<(&str, &str)> = links
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let base = layer(
        &[
            ("bin", None),
            ("bin/busybox", Some(&busybox)),
            ("etc", None),
            ("etc/gone", Some(b"deleted by the top layer")),
            ("etc/motd", Some(b"base")),
        ],
        &link_refs,
        true,
    );
    let top = layer(
        &[
            ("etc/.wh.gone", Some(b"")),
            ("etc/motd", Some(b"top")),
            ("app", None),
            ("app/hello.txt", Some(b"hello from the image")),
        ],
        &[],
        true,
    );
    (base, top)
}

async fn upload(t: &TestApp, query: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let resp = t
        .http
        .post(format!("{}/v1/images?{query}", t.url))
        .bearer_auth(&t.admin_token)
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn image_names(t: &TestApp) -> Vec<String> {
    let (_, b) = t.get("/v1/images").await;
    b["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn an_oci_image_boots_and_runs_its_entrypoint_and_bad_uploads_leave_nothing() {
    let t = TestApp::spawn_with(common::Db::Sqlite, |c| c.max_image_bytes = 8 << 20).await;
    let host = start_host(&t, AgentConfig::DEFAULT_BOOT_TIMEOUT).await;

    let (base, top) = test_image();
    let config = json!({"architecture": "amd64", "os": "linux", "config": {
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ["echo \"$GREETING $(pwd)\" > /tmp/entry.out; exec sleep 3600"],
        "Env": ["GREETING=hi-from-oci", "PATH=/bin"],
        "WorkingDir": "/app",
    }});
    let good = oci_layout(&[base.clone(), top.clone()], &config);
    let sha = hex::encode(sha2::Sha256::digest(&good));

    // Bad uploads: refused with what was wrong, and no image is left.
    let mut corrupt_top = top.clone();
    let mid = corrupt_top.len() / 2;
    corrupt_top[mid] ^= 0xff;
    let mut corrupt = oci_layout(&[base.clone(), top.clone()], &config);
    let at = corrupt
        .windows(top.len())
        .position(|w| w == top.as_slice())
        .unwrap();
    corrupt[at..at + top.len()].copy_from_slice(&corrupt_top);
    for (query, body, want, says) in [
        ("name=Bad", good.clone(), StatusCode::BAD_REQUEST, "name"),
        (
            "name=default",
            good.clone(),
            StatusCode::BAD_REQUEST,
            "built-in",
        ),
        (
            "name=img&format=zip",
            good.clone(),
            StatusCode::BAD_REQUEST,
            "format",
        ),
        (
            &format!("name=img&sha256={}", "0".repeat(64)),
            good.clone(),
            StatusCode::BAD_REQUEST,
            "SHA-256",
        ),
        (
            "name=img",
            vec![7u8; 9 << 20],
            StatusCode::PAYLOAD_TOO_LARGE,
            "at most",
        ),
        (
            "name=img",
            b"not a tar archive".repeat(100),
            StatusCode::BAD_REQUEST,
            "tar",
        ),
        ("name=img", corrupt, StatusCode::BAD_REQUEST, "corrupt"),
        ("name=img", Vec::new(), StatusCode::BAD_REQUEST, "empty"),
    ] {
        let (s, b) = upload(&t, query, body).await;
        assert_eq!(s, want, "{query}: {b}");
        let msg = b["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(says), "{query}: {msg:?} should say {says:?}");
    }
    assert!(!image_names(&t).await.contains(&"img".to_string()));
    let left: Vec<_> = std::fs::read_dir(host.dir.path().join("imported-images"))
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "an import left {left:?}");
    let uploads: Vec<_> = std::fs::read_dir(t.dir.path().join("uploads"))
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(uploads.is_empty(), "the manager kept {uploads:?}");

    // The good one, checked by its SHA-256.
    let (s, img) = upload(&t, &format!("name=busy&sha256={sha}"), good).await;
    assert_eq!(s, StatusCode::CREATED, "{img}");
    assert_eq!(img["kind"], "rootfs");
    assert!(image_names(&t).await.contains(&"busy".to_string()));
    let rootfs = host.dir.path().join("imported-images/busy/rootfs.ext4");
    let before = hex::encode(sha2::Sha256::digest(std::fs::read(&rootfs).unwrap()));

    // It boots, and its entrypoint ran with its env and working dir.
    let (s, vm) = t
        .post("/v1/vms", json!({"name": "c1", "image": "busy"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{vm}");
    wait_vm(&t, "c1", "running").await;
    let mut out = String::new();
    for _ in 0..50 {
        out = sh(&t, "c1", "cat /tmp/entry.out 2>/dev/null || true").await;
        if !out.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(out.trim(), "hi-from-oci /app");
    // The layers applied in order: deleted, replaced, added.
    assert_eq!(
        sh(&t, "c1", "test -e /etc/gone || echo gone").await.trim(),
        "gone"
    );
    assert_eq!(sh(&t, "c1", "cat /etc/motd").await, "top");
    assert_eq!(
        sh(&t, "c1", "cat /app/hello.txt").await,
        "hello from the image"
    );
    // A guest's writes stay its own: the image, and the next VM, see none of them.
    sh(&t, "c1", "echo changed > /app/hello.txt; rm /etc/motd").await;
    assert_eq!(t.delete("/v1/vms/c1").await, StatusCode::NO_CONTENT);
    let after = hex::encode(sha2::Sha256::digest(std::fs::read(&rootfs).unwrap()));
    assert_eq!(before, after, "a guest wrote to the image");
    let (s, vm) = t
        .post(
            "/v1/vms",
            json!({"name": "c2", "image": "busy", "disk_mib": 0}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{vm}");
    wait_vm(&t, "c2", "running").await;
    assert_eq!(
        sh(&t, "c2", "cat /app/hello.txt /etc/motd").await,
        "hello from the imagetop"
    );
    assert_eq!(t.delete("/v1/vms/c2").await, StatusCode::NO_CONTENT);

    host.shutdown().await;
    t.shutdown().await;
}

#[tokio::test]
async fn a_debian_image_builds_with_its_packages_and_boots() {
    let t = TestApp::spawn(common::Db::Sqlite).await;
    let host = start_host(&t, AgentConfig::DEFAULT_BOOT_TIMEOUT).await;
    for (body, says) in [
        (json!({"name": "Bad"}), "name"),
        (json!({"name": "runtime-python"}), "built-in"),
        (json!({"name": "deb", "base": "alpine"}), "debian"),
        (
            json!({"name": "deb", "packages": ["not a package"]}),
            "package",
        ),
    ] {
        let (s, b) = t.post("/v1/images/builds", body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {b}");
        let msg = b["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(says), "{msg:?} should say {says:?}");
    }

    let (s, b) = t
        .post(
            "/v1/images/builds",
            json!({"name": "deb-jq", "packages": ["jq"]}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(900);
    let mut steps = std::collections::BTreeSet::new();
    let build = loop {
        let (s, b) = t.get("/v1/images/builds/deb-jq").await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let h = &b["hosts"][0];
        if let Some(m) = h["message"].as_str() {
            steps.insert(m.to_string());
        }
        if h["state"] != "building" {
            break h.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the build took over 15 minutes: {b}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    assert_eq!(build["state"], "ready", "{build}");
    assert!(build["size_bytes"].as_u64().unwrap() > 10 << 20, "{build}");
    assert!(!steps.is_empty(), "the build showed no progress");

    let (s, vm) = t
        .post(
            "/v1/vms",
            json!({"name": "deb1", "image": "deb-jq", "disk_mib": 0}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{vm}");
    wait_vm(&t, "deb1", "running").await;
    assert!(sh(&t, "deb1", "jq --version").await.starts_with("jq-1."));
    assert!(sh(&t, "deb1", "cat /etc/debian_version")
        .await
        .starts_with("12"));
    assert_eq!(t.delete("/v1/vms/deb1").await, StatusCode::NO_CONTENT);

    // The same recipe again is ready at once.
    let (s, b) = t
        .post(
            "/v1/images/builds",
            json!({"name": "deb-jq", "packages": ["jq"]}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["hosts"][0]["state"], "ready", "{b}");

    host.shutdown().await;
    t.shutdown().await;
}

/// A kernel, an initramfs and an ext4 root filesystem, each imported as a file: the kernel
/// and the initramfs boot with the default image's other part, the ext4 as a root
/// filesystem; a file that is not what it claims is refused and leaves nothing.
#[tokio::test]
async fn a_kernel_an_initramfs_and_an_ext4_file_import_and_boot() {
    let t = TestApp::spawn(common::Db::Sqlite).await;
    let host = start_host(&t, AgentConfig::DEFAULT_BOOT_TIMEOUT).await;
    let (kernel, version) = hearth_agent::image::initramfs::host_kernel().unwrap();
    let default =
        hearth_agent::image::initramfs::build_default(&common::shared_images_dir()).unwrap();

    for (query, says) in [
        ("name=k0&format=kernel", "not a Linux kernel"),
        ("name=i0&format=initrd", "not an initramfs"),
        ("name=e0&format=ext4", "not an ext4"),
    ] {
        let (s, b) = upload(&t, query, b"junk".repeat(1000)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{query}: {b}");
        let msg = b["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(says), "{query}: {msg}");
    }
    let left: Vec<_> = std::fs::read_dir(host.dir.path().join("imported-images"))
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "a refused import left {left:?}");

    let (s, k) = upload(&t, "name=k1&format=kernel", std::fs::read(&kernel).unwrap()).await;
    assert_eq!(s, StatusCode::CREATED, "{k}");
    let (s, i) = upload(
        &t,
        "name=i1&format=initrd",
        std::fs::read(&default.initrd).unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{i}");
    // An ext4 file: the one a rootfs-tar import of the test's busybox layer makes.
    let (base, _) = test_image();
    let (s, b) = upload(&t, "name=tree&format=rootfs-tar", base).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let ext4 = std::fs::read(host.dir.path().join("imported-images/tree/rootfs.ext4")).unwrap();
    let (s, e) = upload(&t, "name=e1&format=ext4", ext4).await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    assert_eq!(e["kind"], "rootfs", "{e}");

    for (vm, image) in [("vk", "k1"), ("vi", "i1"), ("ve", "e1")] {
        let (s, b) = t
            .post(
                "/v1/vms",
                json!({"name": vm, "image": image, "disk_mib": 0}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
    for vm in ["vk", "vi", "ve"] {
        wait_vm(&t, vm, "running").await;
    }
    assert_eq!(sh(&t, "vk", "uname -r").await.trim(), version);
    assert_eq!(sh(&t, "vi", "hostname").await.trim(), "vi");
    assert_eq!(sh(&t, "ve", "ls /bin/busybox").await.trim(), "/bin/busybox");
    for vm in ["vk", "vi", "ve"] {
        assert_eq!(
            t.delete(&format!("/v1/vms/{vm}")).await,
            StatusCode::NO_CONTENT
        );
    }
    host.shutdown().await;
    t.shutdown().await;
}
