//! Compiled runtimes: a function's source built by the manager into a static executable,
//! at deploy (so a compile error is the deploy's error) and again whenever a manager needs
//! the binary and has not built it (the source is what is stored). Binaries are cached under
//! `<data dir>/artifacts/` by a hash of everything that goes into them.
//!
//! - Rust: the code is compiled with `rustc` for `x86_64-unknown-linux-musl` together with
//!   `runtimes/rust_main.rs`, which speaks the runtime protocol around its `handler`.
//! - Go: the code (package main) is built with `go build`, cgo off, beside
//!   `runtimes/go_main.go`, which does the same around its `Handler`.
//! - Java: the code is compiled with `javac --release 17` beside `runtimes/java/` into one
//!   jar, which runs on the JRE of the java runtime image.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};

const RUST_MAIN: &str = include_str!("../../runtimes/rust_main.rs");
const GO_MAIN: &str = include_str!("../../runtimes/go_main.go");
const JAVA_MAIN: &str = include_str!("../../runtimes/java/HearthMain.java");
const JAVA_CONTEXT: &str = include_str!("../../runtimes/java/Context.java");
const RUST_TARGET: &str = "x86_64-unknown-linux-musl";
const COMPILE_TIMEOUT: Duration = Duration::from_secs(180);
/// Compiler output kept for an error message.
const MAX_DIAGNOSTICS: usize = 8 << 10;

fn rustc() -> PathBuf {
    std::env::var_os("RUSTC").map_or_else(|| "rustc".into(), PathBuf::from)
}

fn go() -> PathBuf {
    std::env::var_os("HEARTH_GO").map_or_else(|| "go".into(), PathBuf::from)
}

/// Whether this manager can compile for `runtime`; why not otherwise. Probed once per
/// process (it runs the toolchain).
pub fn toolchain(runtime: &str) -> Result<(), String> {
    static PROBED: std::sync::OnceLock<
        std::collections::HashMap<&'static str, Result<(), String>>,
    > = std::sync::OnceLock::new();
    PROBED
        .get_or_init(|| {
            hearth_types::runtime::RUNTIMES
                .iter()
                .filter(|r| r.compiled)
                .map(|r| (r.name, probe(r.name)))
                .collect()
        })
        .get(runtime)
        .cloned()
        .unwrap_or_else(|| Err(format!("no compiler for {runtime}")))
}

fn probe(runtime: &str) -> Result<(), String> {
    match runtime {
        "rust" => {
            let out = std::process::Command::new(rustc())
                .args(["--print", "target-libdir", "--target", RUST_TARGET])
                .output()
                .map_err(|e| {
                    format!("rustc is not installed on the manager ({e}); install Rust")
                })?;
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && Path::new(&dir).is_dir() {
                Ok(())
            } else {
                Err(format!(
                    "rustc cannot build for {RUST_TARGET}: run `rustup target add {RUST_TARGET}` on the manager"
                ))
            }
        }
        "go" => match std::process::Command::new(go()).arg("version").output() {
            Ok(o) if o.status.success() => Ok(()),
            _ => Err(
                "Go is not installed on the manager: install golang-go (scripts/setup.sh does)"
                    .into(),
            ),
        },
        "java" => {
            let ok = |tool: &str| {
                std::process::Command::new(tool)
                    .arg("--version")
                    .output()
                    .is_ok_and(|o| o.status.success())
            };
            if ok("javac") && ok("jar") {
                Ok(())
            } else {
                Err("a JDK (javac, jar) is not installed on the manager: install openjdk-17-jdk-headless (scripts/setup.sh does)".into())
            }
        }
        other => Err(format!("no compiler for {other}")),
    }
}

/// The build command for `runtime` in `dir`, which holds the sources; it writes `handler`.
fn build_command(runtime: &str, dir: &Path, cache: &Path) -> tokio::process::Command {
    match runtime {
        "java" => {
            let mut cmd = tokio::process::Command::new("sh");
            cmd.args([
                "-c",
                "javac --release 17 -encoding UTF-8 -d classes *.java && jar cf handler -C classes .",
            ]);
            cmd.current_dir(dir);
            cmd
        }
        "go" => {
            let mut cmd = tokio::process::Command::new(go());
            cmd.args(["build", "-trimpath", "-ldflags=-s -w", "-o", "handler", "."])
                .env("CGO_ENABLED", "0")
                .env("GOFLAGS", "-mod=mod")
                .env("GOCACHE", cache.join("go-build"))
                .env("GOPATH", cache.join("go-path"))
                .env("HOME", cache);
            cmd.current_dir(dir);
            cmd
        }
        _ => {
            let mut cmd = tokio::process::Command::new(rustc());
            cmd.args([
                "--edition",
                "2021",
                "--target",
                RUST_TARGET,
                "-C",
                "opt-level=2",
            ])
            .args([
                "-C",
                "strip=symbols",
                "--crate-name",
                "handler",
                "-o",
                "handler",
                "main.rs",
            ]);
            cmd.current_dir(dir);
            cmd
        }
    }
}

/// The files a build of `runtime` needs beside the function's own.
fn sources(runtime: &str) -> &'static [(&'static str, &'static str)] {
    match runtime {
        "go" => &[
            ("hearth_main.go", GO_MAIN),
            ("go.mod", "module handler\n\ngo 1.19\n"),
        ],
        "java" => &[
            ("HearthMain.java", JAVA_MAIN),
            ("Context.java", JAVA_CONTEXT),
        ],
        _ => &[("main.rs", RUST_MAIN)],
    }
}

/// The executable for `source`, from the cache or built now.
pub async fn artifact(data_dir: &Path, runtime: &str, source: &[u8]) -> ApiResult<Vec<u8>> {
    let mut h = Sha256::new();
    let support = sources(runtime)
        .iter()
        .flat_map(|(n, t)| [n.as_bytes(), t.as_bytes()]);
    for part in [runtime.as_bytes()]
        .into_iter()
        .chain(support)
        .chain([source])
    {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    let dir = data_dir.join("artifacts");
    let path = dir.join(format!("{runtime}-{}", hex::encode(&h.finalize()[..16])));
    if let Ok(bin) = tokio::fs::read(&path).await {
        return Ok(bin);
    }
    toolchain(runtime).map_err(ApiError::Conflict)?;
    let work = tempfile::tempdir().map_err(|e| ApiError::Internal(e.into()))?;
    let w = work.path();
    let io = |e: std::io::Error| ApiError::Internal(e.into());
    for (name, text) in sources(runtime) {
        tokio::fs::write(w.join(name), text).await.map_err(io)?;
    }
    let own = match runtime {
        "go" => "handler.go".to_string(),
        "java" => format!("{}.java", java_public_class(source).unwrap_or("Handler")),
        _ => "function.rs".to_string(),
    };
    tokio::fs::write(w.join(&own), source).await.map_err(io)?;
    tokio::fs::create_dir_all(&dir).await.map_err(io)?;
    let mut cmd = build_command(runtime, w, &dir);
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(COMPILE_TIMEOUT, cmd.output())
        .await
        .map_err(|_| {
            ApiError::bad_request(format!(
                "the code did not compile within {} s",
                COMPILE_TIMEOUT.as_secs()
            ))
        })?
        .map_err(io)?;
    if !out.status.success() {
        let mut diag = String::from_utf8_lossy(&out.stderr).into_owned();
        diag.push_str(&String::from_utf8_lossy(&out.stdout));
        if diag.len() > MAX_DIAGNOSTICS {
            let mut cut = MAX_DIAGNOSTICS;
            while !diag.is_char_boundary(cut) {
                cut -= 1;
            }
            diag.truncate(cut);
            diag.push_str("\n[…]");
        }
        return Err(ApiError::bad_request(format!(
            "the code does not compile:\n{diag}"
        )));
    }
    let bin = tokio::fs::read(w.join("handler")).await.map_err(io)?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    tokio::fs::write(&tmp, &bin).await.map_err(io)?;
    tokio::fs::rename(&tmp, &path).await.map_err(io)?;
    Ok(bin)
}

/// The public top-level class a Java source declares (its file must carry that name).
fn java_public_class(source: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(source).ok()?;
    let at = text
        .find("public class ")
        .map(|i| i + 13)
        .or_else(|| text.find("public final class ").map(|i| i + 19))?;
    let name = text[at..]
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .next()?;
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_public_java_class() {
        assert_eq!(
            java_public_class(b"import x;\npublic class Hello {"),
            Some("Hello")
        );
        assert_eq!(java_public_class(b"public final class A_1{}"), Some("A_1"));
        assert_eq!(java_public_class(b"class Hidden {}"), None);
    }
}
