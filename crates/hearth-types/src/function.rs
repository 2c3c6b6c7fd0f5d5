//! Functions: code that runs per invocation inside a microVM of its own pool.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// How a function's code runs in its VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FnMode {
    /// A fresh process per invocation.
    Process,
    /// One long-lived process per VM, fed JSON lines (a `native` executable must speak
    /// the runtime protocol: a `{"event","context"}` line in, an `{"ok"}`/`{"error"}` line
    /// out).
    Persistent,
}

impl FnMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FnMode::Process => "process",
            FnMode::Persistent => "persistent",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Function {
    pub id: String,
    pub name: String,
    pub runtime: String,
    pub handler: String,
    pub mode: FnMode,
    pub memory_mib: u64,
    pub timeout_s: u64,
    pub env: BTreeMap<String, String>,
    /// Env variables set from secrets (variable → secret name).
    pub secrets: BTreeMap<String, String>,
    /// VMs kept warm even when idle.
    pub min_warm: u32,
    /// At most this many VMs (and so concurrent invocations).
    pub max_instances: u32,
    /// An idle VM beyond `min_warm` is retired after this long.
    pub idle_ttl_s: u64,
    /// Invocations per second accepted; more get 429 (0: no limit).
    pub rate_limit_per_s: u32,
    /// SHA-256 of the code: VMs running other code retire.
    pub code_sha256: String,
    pub code_size: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `POST /v1/functions`
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFunction {
    /// 1–63 lowercase letters, digits and dashes.
    pub name: String,
    /// See `GET /v1/runtimes`.
    pub runtime: String,
    /// Source text (scripting runtimes).
    #[serde(default)]
    pub code: Option<String>,
    /// The code as base64: the one file (an executable for `native`), or a tar or tar.gz
    /// archive that is unpacked into /code (with the handler's file at its top; not for the
    /// compiled runtimes).
    #[serde(default)]
    pub code_base64: Option<String>,
    /// What to call; its meaning depends on the runtime (default per runtime).
    #[serde(default)]
    pub handler: Option<String>,
    /// Default `persistent` for the interpreted runtimes (module state lives across calls,
    /// as in most serverless platforms, and no interpreter starts per call), `process` for
    /// `native`.
    #[serde(default)]
    pub mode: Option<FnMode>,
    /// 128–4096 (default 128).
    #[serde(default)]
    pub memory_mib: Option<u64>,
    /// 1–900 (default 30).
    #[serde(default)]
    pub timeout_s: Option<u64>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Env variables whose values come from secrets: `{"DB_PASSWORD": "db-password"}`.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// 0–16 (default 0).
    #[serde(default)]
    pub min_warm: Option<u32>,
    /// 1–64 (default 4).
    #[serde(default)]
    pub max_instances: Option<u32>,
    /// 1–86400 (default 60).
    #[serde(default)]
    pub idle_ttl_s: Option<u64>,
    /// Invocations per second, 0–100000 (default 0: no limit).
    #[serde(default)]
    pub rate_limit_per_s: Option<u32>,
}

/// `PATCH /v1/functions/{name}`: what is given changes; new code retires old VMs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateFunction {
    pub code: Option<String>,
    pub code_base64: Option<String>,
    pub handler: Option<String>,
    pub mode: Option<FnMode>,
    pub memory_mib: Option<u64>,
    pub timeout_s: Option<u64>,
    pub env: Option<BTreeMap<String, String>>,
    pub secrets: Option<BTreeMap<String, String>>,
    pub min_warm: Option<u32>,
    pub max_instances: Option<u32>,
    pub idle_ttl_s: Option<u64>,
    pub rate_limit_per_s: Option<u32>,
}

/// What a handler's failure looks like.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct FnError {
    pub message: String,
    /// The stack or traceback, when the runtime gives one.
    pub stack: Option<String>,
}

/// How a cold start got its VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ColdStart {
    /// A VM booted, and the code was put in place.
    Boot,
    /// A VM restored from the function's snapshot, code loaded and worker started.
    Snapshot,
}

/// The answer of `POST /v1/functions/{name}/invoke`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InvokeResult {
    pub invocation_id: String,
    /// The handler's return value (null when it failed).
    #[schema(value_type = Object)]
    pub output: serde_json::Value,
    pub error: Option<FnError>,
    pub duration_ms: u64,
    /// Whether a VM was started for this call.
    pub cold_start: bool,
    /// How that VM started, when it was.
    pub cold_start_from: Option<ColdStart>,
    /// What the handler wrote to stderr (bounded).
    pub logs: String,
    /// The published version that ran (none: the latest, unpublished code).
    pub version: Option<u32>,
}

/// A past invocation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Invocation {
    pub id: String,
    pub function: String,
    /// `ok` or `error`.
    pub status: String,
    #[schema(value_type = Object)]
    pub output: serde_json::Value,
    pub error: Option<FnError>,
    pub duration_ms: u64,
    pub cold_start: bool,
    pub cold_start_from: Option<ColdStart>,
    pub logs: String,
    pub version: Option<u32>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// At most this many invocations, newest first (1–1000, default 50).
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct FunctionMetrics {
    pub invocations: u64,
    pub errors: u64,
    pub cold_starts: u64,
    /// Of those, how many restored the function's snapshot instead of booting.
    pub cold_starts_from_snapshot: u64,
    /// Over the retained invocations.
    pub duration_ms_p50: u64,
    pub duration_ms_p90: u64,
    pub duration_ms_p99: u64,
    /// VMs now: idle and ready, busy, booting.
    pub instances_idle: u32,
    pub instances_busy: u32,
    pub instances_starting: u32,
}

/// Invocations per minute across all functions (`GET /v1/stats/invocations`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InvocationRate {
    /// One entry per minute, oldest first, the current minute last; quiet minutes are zeros.
    pub minutes: Vec<MinuteCount>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MinuteCount {
    /// The minute's start.
    pub at: DateTime<Utc>,
    pub invocations: u64,
    pub errors: u64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RateQuery {
    /// How many minutes back, the current one included (1–1440, default 60).
    pub minutes: Option<u32>,
}

/// A runtime a function can use.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RuntimeInfo {
    pub name: String,
    pub description: String,
    /// What `handler` means for it, and its default.
    pub handler: String,
    /// The image its VMs boot (`runtime-NAME`, built on each host by
    /// `POST /v1/runtimes/{name}/build`; `default` for native).
    pub image: String,
    /// Whether it runs in a root filesystem of its own, which each host builds once
    /// (`POST /v1/runtimes/{name}/build`) before functions can use it.
    pub builds_image: bool,
    /// Whether functions can use it now (some host has its image); why not otherwise.
    pub available: bool,
    pub reason: Option<String>,
    /// Its image on each host.
    pub hosts: Vec<RuntimeHost>,
}

/// A runtime's image on one host.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RuntimeHost {
    pub host_id: String,
    pub host: String,
    /// `ready`, `building`, `failed` or `absent`.
    pub state: String,
    /// The build's last step, while it builds.
    pub message: Option<String>,
    /// Why the build failed.
    pub error: Option<String>,
    pub size_bytes: u64,
    /// How long the build has taken (or took).
    pub elapsed_ms: u64,
}

/// A schedule that invokes a function.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Schedule {
    pub id: String,
    pub function: String,
    /// `@every 30s` (s, m or h), `@hourly`, `@daily`, `@weekly`, or 5-field cron (UTC).
    pub expr: String,
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
    pub next_run_at: DateTime<Utc>,
    pub last_run_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// `POST /v1/functions/{name}/schedules`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSchedule {
    pub expr: String,
    /// The event each run gets (default null).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InvokeQuery {
    /// Queue it and answer 202 with the invocation at once.
    #[serde(rename = "async")]
    pub async_: Option<bool>,
}

/// A published, immutable version of a function.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FunctionVersion {
    pub version: u32,
    pub handler: String,
    pub mode: FnMode,
    pub memory_mib: u64,
    pub timeout_s: u64,
    pub code_sha256: String,
    pub code_size: u64,
    pub created_at: DateTime<Utc>,
}

/// A name that routes invocations to versions (`NAME:ALIAS`), splitting by weight.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Alias {
    pub name: String,
    /// Version → weight (the weights add up to 100).
    pub routes: BTreeMap<String, u32>,
    pub updated_at: DateTime<Utc>,
}

/// `PUT /v1/functions/{name}/aliases/{alias}`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetAlias {
    /// The version that gets what the others do not.
    pub version: u32,
    /// Other versions and their share in percent, e.g. `{"3": 10}`.
    #[serde(default)]
    pub weights: BTreeMap<String, u32>,
}

/// A secret (its value is never shown).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Secret {
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `PUT /v1/secrets/{name}`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSecret {
    /// At most 64 KiB.
    pub value: String,
}
