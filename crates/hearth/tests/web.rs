//! The web console end to end: a real `hearth up` serving the embedded console, driven in
//! Debian's Chromium by Playwright (`web/e2e/`). The browser logs in, boots a VM and types in
//! its shell, deploys and invokes a python function, deletes both, and takes the screenshots
//! that docs/screenshots/ holds. Needs `web/` built (`make web`; `make test` does it).

mod common;

use std::path::Path;
use std::process::Command;

use common::{free_port, http_get, start_up, ReapVms};

#[test]
fn console_in_a_real_browser() {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web");
    assert!(
        web.join("node_modules/@playwright/test").is_dir(),
        "web/node_modules is missing: run `make web` (npm ci) first"
    );
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let port = free_port();
    let _reap = ReapVms(data.join("agent"));
    let _up = start_up(&data, port, Some("console-e2e-pass"));
    let page = http_get(port, "/").unwrap();
    assert!(
        page.contains("/assets/"),
        "the manager serves the placeholder, not the built console: run `make web` and rebuild"
    );
    let out = Command::new("npx")
        .args(["playwright", "test", "--reporter=line"])
        .current_dir(&web)
        .env("HEARTH_URL", format!("http://127.0.0.1:{port}"))
        .env("HEARTH_PASSWORD", "console-e2e-pass")
        // The committed screenshots are refreshed on request only, so a test run leaves the
        // tree clean: HEARTH_UPDATE_SCREENSHOTS=1 cargo test -p hearth --test web.
        .env(
            "HEARTH_SCREENSHOTS",
            if std::env::var_os("HEARTH_UPDATE_SCREENSHOTS").is_some() {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots")
            } else {
                root.path().join("screenshots")
            },
        )
        .output()
        .expect("running npx playwright");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{log}");
    assert!(out.status.success(), "the browser tests failed:\n{log}");
}
