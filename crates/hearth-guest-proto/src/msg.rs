//! The JSON messages carried by `Hello`, `Request`, `Response` and `Notice` frames.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Stream 0. The host offers the versions it speaks; the guest answers with the version it
/// chose (the highest both speak) and what it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub versions: Vec<u32>,
    #[serde(default)]
    pub agent: String,
    #[serde(default)]
    pub boot_id: String,
}

/// What the host asks. Each opens a stream; the guest ends it with one [`Response`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Ping,
    /// Runs a command. Its stdout and stderr stream back as `Stdout`/`Stderr` frames; stdin
    /// comes as `Stdin` frames ended by `StdinEof`. With `pty`, one terminal carries both
    /// directions (as `Stdin`/`Stdout`) and `Resize` frames change its size.
    Exec {
        argv: Vec<String>,
        #[serde(default)]
        env: BTreeMap<String, String>,
        #[serde(default)]
        cwd: Option<String>,
        /// Killed (SIGKILL to its process group) after this long; none when 0.
        #[serde(default)]
        timeout_ms: u64,
        #[serde(default)]
        pty: Option<PtySize>,
    },
    /// Sends one line to the guest's persistent worker and waits for the one line it answers
    /// (a function's runtime in persistent mode). The worker is `argv` started with `env` in
    /// `cwd`; it is started on the first call and replaced when these change. What it writes
    /// to stderr during the call, up to a line [`CALL_END`], comes back as the call's logs.
    Call {
        argv: Vec<String>,
        #[serde(default)]
        env: BTreeMap<String, String>,
        #[serde(default)]
        cwd: Option<String>,
        line: String,
        /// The worker is killed after this long; none when 0.
        #[serde(default)]
        timeout_ms: u64,
        /// Only make sure the worker runs (a function's VM warming up before its snapshot):
        /// nothing is sent, and the answer has no line.
        #[serde(default)]
        start_only: bool,
    },
    /// Resource use of the guest.
    Metrics,
    /// Reads a file (up to `MAX_PAYLOAD` bytes, base64 in the response).
    ReadFile {
        path: String,
    },
    /// Writes a file, creating parent directories. A file larger than one frame is sent as
    /// a first write and then appends.
    WriteFile {
        path: String,
        /// Base64.
        data: String,
        #[serde(default = "default_mode")]
        mode: u32,
        /// Add to the end instead of replacing.
        #[serde(default)]
        append: bool,
    },
    /// Told to a guest restored from a snapshot, before anything else: it takes the clone's
    /// own hostname, mixes fresh entropy into its RNG (a clone must not repeat its origin's
    /// random numbers), sets its clock, and counts the restore in `/run/hearth/restored`.
    Restored {
        hostname: String,
        /// Base64, from the host's RNG.
        entropy: String,
        /// The host's wall clock, in ms since the Unix epoch.
        now_ms: i64,
        /// The clone's own NIC settings on a managed network (the saved ones belong to the
        /// VM the snapshot was taken of).
        #[serde(default)]
        net: Option<NetConfig>,
    },
    /// Powers the guest off (or reboots it) after syncing disks.
    Shutdown {
        #[serde(default)]
        reboot: bool,
    },
}

/// A NIC's settings, as a restored clone takes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetConfig {
    pub mac: String,
    /// With its prefix, e.g. `10.88.0.7/16`.
    pub address: String,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub dns: Vec<String>,
}

/// The line a persistent worker writes to stderr after each call, so the guest knows where
/// the call's logs end.
pub const CALL_END: &str = "\u{1e}hearth-call-end";

fn default_mode() -> u32 {
    0o644
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PtySize {
    pub rows: u16,
    pub cols: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Ok,
    Pong {
        uptime_ms: u64,
    },
    Exited {
        /// The exit code, or 128 + signal when killed by one.
        code: i32,
        signal: Option<i32>,
        timed_out: bool,
    },
    /// How a [`Request::Call`] went: the worker's answer, or how it ended without one.
    Called {
        line: Option<String>,
        logs: String,
        /// Set when the worker exited (or was killed) instead of answering.
        code: Option<i32>,
        timed_out: bool,
    },
    Metrics(GuestMetrics),
    File {
        data: String,
    },
    Error {
        message: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GuestMetrics {
    pub uptime_s: f64,
    /// Cumulative CPU time by state, in clock ticks (from /proc/stat), so the host can compute
    /// a percentage between two samples.
    pub cpu_busy_ticks: u64,
    pub cpu_total_ticks: u64,
    pub memory_total_kib: u64,
    pub memory_available_kib: u64,
    pub disk_total_kib: u64,
    pub disk_used_kib: u64,
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
    pub processes: u32,
}

/// Guest → host, unsolicited, on stream 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Notice {
    /// The guest is up and serving (sent when the port opens).
    Ready { boot_id: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_json_shape() {
        let r = Request::Exec {
            argv: vec!["uname".into(), "-r".into()],
            env: BTreeMap::new(),
            cwd: None,
            timeout_ms: 0,
            pty: None,
        };
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["op"], "exec");
        assert_eq!(j["argv"][1], "-r");
        let back: Request = serde_json::from_str(r#"{"op":"exec","argv":["true"]}"#).unwrap();
        assert!(matches!(back, Request::Exec { timeout_ms: 0, .. }));
        let resp: Response =
            serde_json::from_str(r#"{"result":"exited","code":3,"signal":null,"timed_out":false}"#)
                .unwrap();
        assert_eq!(
            resp,
            Response::Exited {
                code: 3,
                signal: None,
                timed_out: false
            }
        );
    }
}
