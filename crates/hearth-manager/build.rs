//! Points `HEARTH_WEB_DIR` at the web console's built files (`web/dist`, written by
//! `npm run build` in `web/`), which `http::web` embeds in the binary. Without a build there,
//! a one-page placeholder that says how to build it is embedded instead, so the Rust code
//! builds without Node.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let web = manifest.join("../../web");
    let dist = web.join("dist");
    let dir = if dist.join("index.html").is_file() {
        // Every `vite build` rewrites index.html (its asset names carry content hashes).
        println!(
            "cargo:rerun-if-changed={}",
            dist.join("index.html").display()
        );
        dist
    } else {
        println!("cargo:rerun-if-changed={}", web.display());
        let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it")).join("web");
        std::fs::create_dir_all(&out).expect("creating the placeholder's directory");
        std::fs::write(
            out.join("index.html"),
            "<!doctype html><meta charset=utf-8><title>Hearth</title>\
             <h1>The web console was not built</h1>\
             <p>Build it with <code>make web</code> (or <code>npm ci &amp;&amp; npm run build</code> \
             in <code>web/</code>), then rebuild hearth. <code>make up</code> does both. \
             The API is at <a href=/docs>/docs</a>.</p>\n",
        )
        .expect("writing the placeholder");
        out
    };
    println!("cargo:rustc-env=HEARTH_WEB_DIR={}", dir.display());
}
