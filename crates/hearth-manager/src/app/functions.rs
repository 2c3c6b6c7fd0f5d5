//! Functions: their records, their runtimes, and invoking them.
//!
//! An invocation takes a VM from the function's pool ([`super::pool`]), runs the handler in
//! it through the host's agent, records what happened, and gives the VM back (or retires it
//! when it misbehaved or runs old code).
//!
//! How a call is made depends on the runtime and the mode (see [`hearth_types::runtime`]):
//! a fresh process per call through exec, or a line to the VM's persistent worker. The
//! interpreted runtimes answer with an `{"ok"}`/`{"error"}` reply; a `native` executable in
//! process mode gets the event JSON on stdin and prints its result JSON on stdout, and a
//! non-zero exit is an error whose message is the last line of stderr. Logs are stderr.

use std::collections::BTreeMap;
use std::time::Instant;

use base64::Engine;
use hearth_store::{now_ms, to_time, AliasRecord, FunctionRecord, InvocationRecord, VersionRecord};
use hearth_types::api::Page;
use hearth_types::function::{
    Alias, CreateFunction, FnError, FnMode, Function, FunctionMetrics, FunctionVersion, Invocation,
    InvocationRate, InvokeResult, MinuteCount, SetAlias, UpdateFunction,
};
use hearth_types::new_id;
use hearth_types::runtime::{self, Runtime, RuntimeKind};
use hearth_types::vm::{check_name, ExecVm};
use sha2::{Digest, Sha256};

use super::{page, page_limit, App};
use crate::error::{ApiError, ApiResult};

/// Largest code accepted (the agent RPC carries at most 4 MiB).
pub const MAX_CODE_BYTES: usize = 3 << 20;
/// Largest event accepted.
pub const MAX_EVENT_BYTES: usize = 1 << 20;
/// Logs kept per invocation.
const MAX_LOGS: usize = 64 << 10;

fn mode_of(s: &str) -> FnMode {
    if s == "persistent" {
        FnMode::Persistent
    } else {
        FnMode::Process
    }
}

pub(crate) fn env_of(f: &FunctionRecord) -> BTreeMap<String, String> {
    serde_json::from_str(&f.env).unwrap_or_default()
}

fn secrets_of(f: &FunctionRecord) -> BTreeMap<String, String> {
    serde_json::from_str(&f.secrets).unwrap_or_default()
}

fn view(f: FunctionRecord) -> Function {
    Function {
        env: env_of(&f),
        secrets: secrets_of(&f),
        mode: mode_of(&f.mode),
        id: f.id,
        name: f.name,
        runtime: f.runtime,
        handler: f.handler,
        memory_mib: f.memory_mib,
        timeout_s: f.timeout_s,
        min_warm: f.min_warm,
        max_instances: f.max_instances,
        idle_ttl_s: f.idle_ttl_s,
        rate_limit_per_s: f.rate_limit_per_s,
        code_sha256: f.code_sha256,
        code_size: f.code_size,
        created_at: to_time(f.created_at_ms),
        updated_at: to_time(f.updated_at_ms),
    }
}

fn invocation_view(i: InvocationRecord, function: &str) -> Invocation {
    Invocation {
        output: serde_json::from_str(&i.output).unwrap_or_default(),
        error: i
            .error
            .as_deref()
            .and_then(|e| serde_json::from_str(e).ok()),
        id: i.id,
        function: function.to_string(),
        status: i.status,
        duration_ms: i.duration_ms,
        cold_start: i.cold_start.is_some(),
        cold_start_from: i.cold_start,
        logs: i.logs,
        version: i.version,
        at: to_time(i.created_at_ms),
    }
}

/// The code's bytes from `code` or `code_base64` (exactly one).
fn code_bytes(code: Option<String>, code_base64: Option<String>) -> ApiResult<Option<Vec<u8>>> {
    let bytes = match (code, code_base64) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give either code or code_base64, not both",
            ))
        }
        (Some(c), None) => c.into_bytes(),
        (None, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .map_err(|e| ApiError::bad_request(format!("code_base64 is not base64: {e}")))?,
        (None, None) => return Ok(None),
    };
    if bytes.is_empty() {
        return Err(ApiError::bad_request("the code is empty"));
    }
    if bytes.len() > MAX_CODE_BYTES {
        return Err(ApiError::PayloadTooLarge(format!(
            "the code is {} bytes; at most {MAX_CODE_BYTES}",
            bytes.len()
        )));
    }
    Ok(Some(bytes))
}

fn set_code(f: &mut FunctionRecord, bytes: &[u8]) {
    f.code = base64::engine::general_purpose::STANDARD.encode(bytes);
    f.code_sha256 = hex::encode(Sha256::digest(bytes));
    f.code_size = bytes.len() as u64;
}

/// Checks the numbers of a function, in place.
fn check(f: &FunctionRecord) -> ApiResult<()> {
    let bad = |m: String| Err(ApiError::BadRequest(m));
    // Below 128 MiB the guest does not boot.
    if !(128..=4096).contains(&f.memory_mib) {
        return bad(format!("memory_mib must be 128–4096, got {}", f.memory_mib));
    }
    if !(1..=900).contains(&f.timeout_s) {
        return bad(format!("timeout_s must be 1–900, got {}", f.timeout_s));
    }
    if f.min_warm > 16 {
        return bad(format!("min_warm must be 0–16, got {}", f.min_warm));
    }
    if !(1..=64).contains(&f.max_instances) {
        return bad(format!(
            "max_instances must be 1–64, got {}",
            f.max_instances
        ));
    }
    if f.min_warm > f.max_instances {
        return bad("min_warm cannot be more than max_instances".into());
    }
    if !(1..=86_400).contains(&f.idle_ttl_s) {
        return bad(format!("idle_ttl_s must be 1–86400, got {}", f.idle_ttl_s));
    }
    let env = env_of(f);
    if env.len() > 128
        || env
            .iter()
            .any(|(k, v)| k.is_empty() || k.len() > 128 || k.contains('=') || v.len() > 4096)
    {
        return bad(
            "env: at most 128 variables, names 1–128 characters without '=', values up to 4096"
                .into(),
        );
    }
    if f.rate_limit_per_s > 100_000 {
        return bad(format!(
            "rate_limit_per_s must be 0–100000, got {}",
            f.rate_limit_per_s
        ));
    }
    let secrets = secrets_of(f);
    if secrets.len() > 64 {
        return bad("secrets: at most 64".into());
    }
    for (var, name) in &secrets {
        if var.is_empty() || var.len() > 128 || var.contains('=') {
            return bad(format!("secrets: {var:?} is not an env variable name"));
        }
        super::secrets::check_secret_name(name)?;
    }
    if f.handler.is_empty()
        || f.handler.len() > 128
        || f.handler.contains("..")
        || !f
            .handler
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-/".contains(&b))
    {
        return bad(format!(
            "handler {:?} must be 1–128 letters, digits, '_', '.', '-' or '/' (module.function)",
            f.handler
        ));
    }
    Ok(())
}

/// What one invocation runs: the function as it is now, or one of its published versions,
/// and the pool that serves it.
pub(crate) struct Target {
    pub f: FunctionRecord,
    pub key: String,
    pub version: Option<u32>,
}

/// The function as it was published in `v`.
fn as_version(mut f: FunctionRecord, v: VersionRecord) -> FunctionRecord {
    f.handler = v.handler;
    f.mode = v.mode;
    f.memory_mib = v.memory_mib;
    f.timeout_s = v.timeout_s;
    f.env = v.env;
    f.code = v.code;
    f.code_sha256 = v.code_sha256;
    f.code_size = v.code_size;
    f
}

fn version_view(v: VersionRecord) -> FunctionVersion {
    FunctionVersion {
        version: v.version,
        mode: mode_of(&v.mode),
        handler: v.handler,
        memory_mib: v.memory_mib,
        timeout_s: v.timeout_s,
        code_sha256: v.code_sha256,
        code_size: v.code_size,
        created_at: to_time(v.created_at_ms),
    }
}

fn alias_view(a: AliasRecord) -> Alias {
    Alias {
        routes: serde_json::from_str(&a.routes).unwrap_or_default(),
        name: a.name,
        updated_at: to_time(a.updated_at_ms),
    }
}

/// Picks a version from `{"<version>": weight}` routes, in proportion to the weights.
fn pick(routes: &BTreeMap<String, u32>) -> Option<u32> {
    let total: u32 = routes.values().sum();
    if total == 0 {
        return None;
    }
    let mut roll = rand::random_range(0..total);
    for (v, w) in routes {
        if roll < *w {
            return v.parse().ok();
        }
        roll -= w;
    }
    None
}

impl App {
    /// Resolves `NAME`, `NAME:VERSION` or `NAME:ALIAS`.
    pub(crate) async fn resolve(&self, name: &str) -> ApiResult<Target> {
        let (base, qualifier) = match name.split_once(':') {
            Some((b, q)) => (b, Some(q)),
            None => (name, None),
        };
        let f = self.store().function(base).await?;
        let version = match qualifier {
            None | Some("latest") => None,
            Some(q) if q.bytes().all(|b| b.is_ascii_digit()) => Some(
                q.parse::<u32>()
                    .map_err(|_| ApiError::bad_request(format!("version {q:?} is out of range")))?,
            ),
            Some(alias) => {
                let a = self.store().alias(&f.id, alias).await.map_err(|_| {
                    ApiError::NotFound(format!(
                        "function {} has no alias {alias:?} (and no such version)",
                        f.name
                    ))
                })?;
                let routes: BTreeMap<String, u32> =
                    serde_json::from_str(&a.routes).unwrap_or_default();
                Some(pick(&routes).ok_or_else(|| {
                    ApiError::Conflict(format!("alias {alias:?} routes nowhere; set it again"))
                })?)
            }
        };
        self.target(f, version).await
    }

    pub(crate) async fn target(
        &self,
        f: FunctionRecord,
        version: Option<u32>,
    ) -> ApiResult<Target> {
        match version {
            None => Ok(Target {
                key: f.id.clone(),
                f,
                version: None,
            }),
            Some(n) => {
                let v = self.store().version(&f.id, n).await.map_err(|_| {
                    ApiError::NotFound(format!(
                        "function {} has no version {n}; publish one with `hearth fn publish`",
                        f.name
                    ))
                })?;
                Ok(Target {
                    key: format!("{}@v{n}", f.id),
                    f: as_version(f, v),
                    version: Some(n),
                })
            }
        }
    }

    /// Publishes the function as it is now as an immutable version.
    pub async fn publish_version(&self, name: &str) -> ApiResult<FunctionVersion> {
        let f = self.store().function(name).await?;
        Ok(version_view(self.store().publish_version(&f).await?))
    }

    pub async fn list_versions(&self, name: &str) -> ApiResult<Vec<FunctionVersion>> {
        let f = self.store().function(name).await?;
        Ok(self
            .store()
            .versions(&f.id)
            .await?
            .into_iter()
            .map(version_view)
            .collect())
    }

    /// Points an alias at a version, with optional shares for others.
    pub async fn set_alias(&self, name: &str, alias: &str, req: SetAlias) -> ApiResult<Alias> {
        let f = self.store().function(name).await?;
        let valid = !alias.is_empty()
            && alias.len() <= 63
            && alias
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !alias.bytes().all(|b| b.is_ascii_digit())
            && alias != "latest";
        if !valid {
            return Err(ApiError::bad_request(format!(
                "invalid alias {alias:?}: 1–63 lowercase letters, digits and dashes, not all digits, not `latest`"
            )));
        }
        let mut routes: BTreeMap<String, u32> = BTreeMap::new();
        let mut others = 0u32;
        for (v, w) in &req.weights {
            let n: u32 = v.parse().map_err(|_| {
                ApiError::bad_request(format!("weights: {v:?} is not a version number"))
            })?;
            if !(1..=99).contains(w) || n == req.version {
                return Err(ApiError::bad_request(
                    "weights: each other version gets 1–99 percent".to_string(),
                ));
            }
            self.target(f.clone(), Some(n)).await?;
            others += w;
            routes.insert(n.to_string(), *w);
        }
        if others >= 100 {
            return Err(ApiError::bad_request(format!(
                "weights add up to {others}%: version {} must keep some",
                req.version
            )));
        }
        self.target(f.clone(), Some(req.version)).await?;
        routes.insert(req.version.to_string(), 100 - others);
        let a = AliasRecord {
            function_id: f.id.clone(),
            name: alias.to_string(),
            routes: serde_json::to_string(&routes).unwrap_or_default(),
            updated_at_ms: now_ms(),
        };
        self.store().set_alias(&a).await?;
        Ok(alias_view(a))
    }

    pub async fn list_aliases(&self, name: &str) -> ApiResult<Vec<Alias>> {
        let f = self.store().function(name).await?;
        Ok(self
            .store()
            .aliases(&f.id)
            .await?
            .into_iter()
            .map(alias_view)
            .collect())
    }

    pub async fn delete_alias(&self, name: &str, alias: &str) -> ApiResult<()> {
        let f = self.store().function(name).await?;
        self.store().delete_alias(&f.id, alias).await?;
        Ok(())
    }

    pub async fn create_function(&self, req: CreateFunction) -> ApiResult<Function> {
        check_name("function", &req.name).map_err(ApiError::BadRequest)?;
        let rt = runtime::find(&req.runtime).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown runtime {:?}; the runtimes are: {}",
                req.runtime,
                runtime::names()
            ))
        })?;
        // Asks the hosts for an image runtime: their last reports may predate a build that
        // just finished.
        let unavailable = self.runtime(rt.name).await?.reason;
        if let Some(reason) = unavailable {
            return Err(ApiError::Conflict(format!(
                "the {} runtime is not available: {reason}",
                rt.name
            )));
        }
        let code = code_bytes(req.code, req.code_base64)?.ok_or_else(|| {
            ApiError::bad_request("code (source text) or code_base64 is required")
        })?;
        let now = now_ms();
        let mut f = FunctionRecord {
            id: new_id(),
            name: req.name,
            runtime: req.runtime,
            handler: req.handler.unwrap_or_else(|| rt.default_handler.into()),
            mode: req
                .mode
                .unwrap_or(if rt.kind == RuntimeKind::Native {
                    FnMode::Process
                } else {
                    FnMode::Persistent
                })
                .as_str()
                .into(),
            memory_mib: req.memory_mib.unwrap_or(128),
            timeout_s: req.timeout_s.unwrap_or(30),
            env: serde_json::to_string(&req.env).unwrap_or_else(|_| "{}".into()),
            secrets: serde_json::to_string(&req.secrets).unwrap_or_else(|_| "{}".into()),
            rate_limit_per_s: req.rate_limit_per_s.unwrap_or(0),
            min_warm: req.min_warm.unwrap_or(0),
            max_instances: req.max_instances.unwrap_or(4),
            idle_ttl_s: req.idle_ttl_s.unwrap_or(60),
            code: String::new(),
            code_sha256: String::new(),
            code_size: 0,
            invocations_total: 0,
            errors_total: 0,
            cold_starts_total: 0,
            snapshot_cold_starts_total: 0,
            created_at_ms: now,
            updated_at_ms: now,
        };
        set_code(&mut f, &code);
        check(&f)?;
        self.compile_if_needed(rt, &code).await?;
        self.store().insert_function(&f).await?;
        Ok(view(f))
    }

    pub async fn function(&self, name: &str) -> ApiResult<Function> {
        Ok(view(self.store().function(name).await?))
    }

    /// The function's latest code as deployed: its one file, or its archive (`--code DIR`).
    pub async fn function_code(&self, name: &str) -> ApiResult<Vec<u8>> {
        let f = self.store().function(name).await?;
        base64::engine::general_purpose::STANDARD
            .decode(&f.code)
            .map_err(|e| {
                ApiError::Internal(anyhow::anyhow!("stored code of {name} is corrupt: {e}"))
            })
    }

    pub async fn list_functions(
        &self,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> ApiResult<Page<Function>> {
        Ok(page(
            self.store().functions(cursor, page_limit(limit)?).await?,
            view,
        ))
    }

    pub async fn update_function(&self, name: &str, req: UpdateFunction) -> ApiResult<Function> {
        let mut f = self.store().function(name).await?;
        if let Some(code) = code_bytes(req.code, req.code_base64)? {
            self.compile_if_needed(runtime_of(&f)?, &code).await?;
            set_code(&mut f, &code);
        }
        if let Some(h) = req.handler {
            f.handler = h;
        }
        if let Some(m) = req.mode {
            f.mode = m.as_str().into();
        }
        f.memory_mib = req.memory_mib.unwrap_or(f.memory_mib);
        f.timeout_s = req.timeout_s.unwrap_or(f.timeout_s);
        if let Some(env) = req.env {
            f.env = serde_json::to_string(&env).unwrap_or_else(|_| "{}".into());
        }
        if let Some(secrets) = req.secrets {
            f.secrets = serde_json::to_string(&secrets).unwrap_or_else(|_| "{}".into());
        }
        f.min_warm = req.min_warm.unwrap_or(f.min_warm);
        f.max_instances = req.max_instances.unwrap_or(f.max_instances);
        f.idle_ttl_s = req.idle_ttl_s.unwrap_or(f.idle_ttl_s);
        f.rate_limit_per_s = req.rate_limit_per_s.unwrap_or(f.rate_limit_per_s);
        check(&f)?;
        self.store().update_function(&f).await?;
        // VMs with old code or an old size retire as soon as they are idle.
        self.pools().refresh(self, &f);
        self.function(&f.id).await
    }

    pub async fn delete_function(&self, name: &str) -> ApiResult<()> {
        let f = self.store().function(name).await?;
        self.store().delete_function(&f.id).await?;
        self.pools().remove(self, &f.id);
        // Its cold-start snapshots go too; one whose host is down now stays listed, and
        // `hearth snapshot delete` removes it later.
        for s in self.store().function_snapshots(&f.id, None).await? {
            if let Err(e) = self.delete_snapshot(&s.id).await {
                tracing::warn!(function = %f.name, snapshot = %s.name, error = %e, "deleting a function snapshot failed");
            }
        }
        Ok(())
    }

    pub async fn function_logs(
        &self,
        name: &str,
        limit: Option<u32>,
    ) -> ApiResult<Page<Invocation>> {
        let f = self.store().function(name).await?;
        let limit = limit.unwrap_or(50).clamp(1, 1000);
        let items = self.store().invocations(&f.id, limit).await?;
        Ok(Page {
            items: items
                .into_iter()
                .map(|i| invocation_view(i, &f.name))
                .collect(),
            next_cursor: None,
        })
    }

    pub async fn invocation(&self, id: &str) -> ApiResult<Invocation> {
        let i = self.store().invocation(id).await?;
        let f = self.store().function(&i.function_id).await?;
        Ok(invocation_view(i, &f.name))
    }

    pub async fn function_metrics(&self, name: &str) -> ApiResult<FunctionMetrics> {
        let f = self.store().function(name).await?;
        let mut durations: Vec<u64> = self
            .store()
            .invocations(&f.id, hearth_store::KEEP_INVOCATIONS as u32)
            .await?
            .iter()
            .map(|i| i.duration_ms)
            .collect();
        durations.sort_unstable();
        let pct = |p: f64| -> u64 {
            if durations.is_empty() {
                0
            } else {
                durations[((durations.len() - 1) as f64 * p).round() as usize]
            }
        };
        let (idle, busy, starting) = self.pools().counts(&f.id);
        Ok(FunctionMetrics {
            invocations: f.invocations_total,
            errors: f.errors_total,
            cold_starts: f.cold_starts_total,
            cold_starts_from_snapshot: f.snapshot_cold_starts_total,
            duration_ms_p50: pct(0.5),
            duration_ms_p90: pct(0.9),
            duration_ms_p99: pct(0.99),
            instances_idle: idle,
            instances_busy: busy,
            instances_starting: starting,
        })
    }

    /// Invocations and failures per minute over the last `minutes` minutes (1–1440), every
    /// minute present, zeros included. Counts only the invocations still retained.
    pub async fn invocation_rate(&self, minutes: Option<u32>) -> ApiResult<InvocationRate> {
        let minutes = i64::from(minutes.unwrap_or(60));
        if !(1..=1440).contains(&minutes) {
            return Err(ApiError::bad_request(format!(
                "minutes must be 1–1440, not {minutes}"
            )));
        }
        let now = chrono::Utc::now().timestamp_millis() / 60_000;
        let first = now - minutes + 1;
        let counted = self.store().invocations_per_minute(first * 60_000).await?;
        let mut counted = counted.into_iter().peekable();
        let minutes = (first..=now)
            .map(|m| {
                let (invocations, errors) = match counted.next_if(|(at, _, _)| *at == m) {
                    Some((_, n, e)) => (n, e),
                    None => (0, 0),
                };
                MinuteCount {
                    at: to_time(m * 60_000),
                    invocations,
                    errors,
                }
            })
            .collect();
        Ok(InvocationRate { minutes })
    }

    /// Runs the function once with `event` (a JSON body) and records it.
    pub async fn invoke(&self, caller: &str, name: &str, event: &[u8]) -> ApiResult<InvokeResult> {
        let event = parse_event(event)?;
        let target = self.resolve(name).await?;
        self.admit(caller, &target.f)?;
        let r = self.execute(&target, event, new_id()).await?;
        let record = record_of(&target.f, &r);
        if let Err(e) = self.store().record_invocation(&record).await {
            tracing::warn!(error = %e, function = %target.f.name, "could not record an invocation");
        }
        Ok(r)
    }

    /// Applies the caller's and the function's rate limits.
    fn admit(&self, caller: &str, f: &FunctionRecord) -> ApiResult<()> {
        let limited = |what: String, wait: std::time::Duration| ApiError::TooManyRequests {
            message: what,
            retry_after_s: wait.as_secs_f64().ceil().max(1.0) as u64,
        };
        let per_caller = self.config().invoke_rate_limit_per_s;
        self.inner
            .rate_limits
            .take(&format!("caller:{caller}"), per_caller)
            .map_err(|w| {
                limited(
                    format!("{caller} is over {per_caller} invocations a second"),
                    w,
                )
            })?;
        self.inner
            .rate_limits
            .take(&format!("function:{}", f.id), f.rate_limit_per_s)
            .map_err(|w| {
                limited(
                    format!(
                        "function {} is over its limit of {} invocations a second",
                        f.name, f.rate_limit_per_s
                    ),
                    w,
                )
            })
    }

    /// Queues an invocation and answers at once; `GET /v1/invocations/{id}` tells how it
    /// went.
    pub async fn invoke_async(
        &self,
        caller: &str,
        name: &str,
        event: &[u8],
    ) -> ApiResult<Invocation> {
        let event = parse_event(event)?;
        let target = self.resolve(name).await?;
        self.admit(caller, &target.f)?;
        let id = new_id();
        self.store()
            .queue_invocation(&id, &target.f.id, &event, target.version)
            .await?;
        let app = self.clone();
        let q = hearth_store::QueuedInvocation {
            id: id.clone(),
            function_id: target.f.id.clone(),
            event,
            version: target.version,
        };
        tokio::spawn(async move { app.run_queued(q).await });
        self.invocation(&id).await
    }

    /// Runs a queued invocation, unless another manager (or task) took it first.
    pub(crate) async fn run_queued(&self, q: hearth_store::QueuedInvocation) {
        match self.store().take_invocation(&q.id).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(error = %e, invocation = %q.id, "could not take an invocation");
                return;
            }
        }
        let target = match self.store().function(&q.function_id).await {
            Ok(f) => self.target(f, q.version).await,
            Err(e) => Err(e.into()),
        };
        let record = match target {
            Ok(t) => match self.execute(&t, q.event, q.id.clone()).await {
                Ok(r) => record_of(&t.f, &r),
                Err(e) => failed_record(&q.id, &q.function_id, &e.to_string()),
            },
            Err(e) => failed_record(&q.id, &q.function_id, &e.to_string()),
        };
        if let Err(e) = self.store().finish_invocation(&record).await {
            tracing::warn!(error = %e, invocation = %q.id, "could not record an invocation");
        }
    }

    /// Runs the handler once in a VM of the function's pool.
    async fn execute(
        &self,
        target: &Target,
        event: String,
        invocation_id: String,
    ) -> ApiResult<InvokeResult> {
        let (f, key) = (&target.f, target.key.as_str());
        let rt = runtime_of(f)?;
        let started = Instant::now();
        let deadline = now_ms() + (f.timeout_s * 1000) as i64;
        let env = self.function_env(f).await?;
        let call = Call::new(rt, f, env, &event, &invocation_id, target.version, deadline);
        // A warm VM that turns out broken (its host restarted, it was deleted) is retired and
        // the call tried once more; a VM booted for this call gets no second chance.
        let mut attempts = 0;
        let (instance, cold_start, ran) = loop {
            attempts += 1;
            let (instance, cold_start) = self.pools().acquire(self, key, f).await?;
            match self.run_call(&instance.vm_id, &call, f.timeout_s).await {
                Ok(ran) => break (instance, cold_start, ran),
                Err(e) => {
                    self.pools().release(self, key, f, instance, false);
                    if cold_start.is_some() || attempts > 1 {
                        return Err(e);
                    }
                    tracing::warn!(function = %f.name, error = %e, "a warm VM failed; retrying on another");
                }
            }
        };
        // A VM whose handler ran out of time, or whose persistent worker died, is retired.
        let healthy = !(ran.timed_out || (call.persistent && ran.exit_code.is_some()));
        self.pools().release(self, key, f, instance, healthy);
        let (output, error) = outcome(&ran, call.envelope, f.timeout_s);
        let mut logs = ran.logs;
        if logs.len() > MAX_LOGS {
            let mut cut = logs.len() - MAX_LOGS;
            while !logs.is_char_boundary(cut) {
                cut += 1;
            }
            logs = format!("[… {cut} bytes dropped]\n{}", &logs[cut..]);
        }
        let duration_ms = started.elapsed().as_millis() as u64;
        self.metrics()
            .function_invoked(&f.name, error.is_none(), cold_start, duration_ms);
        Ok(InvokeResult {
            invocation_id,
            output,
            error,
            duration_ms,
            cold_start: cold_start.is_some(),
            cold_start_from: cold_start,
            logs,
            version: target.version,
        })
    }

    /// For a compiled runtime, builds the code now: a compile error fails the deploy.
    async fn compile_if_needed(&self, rt: &Runtime, code: &[u8]) -> ApiResult<()> {
        if rt.compiled {
            if archive_kind(code).is_some() {
                return Err(ApiError::bad_request(format!(
                    "the {} runtime takes one source file, not an archive",
                    rt.name
                )));
            }
            super::compile::artifact(&self.config().data_dir, rt.name, code).await?;
        }
        Ok(())
    }

    /// What a function VM runs: the stored code, or for a compiled runtime its binary.
    pub(crate) async fn executable(&self, f: &FunctionRecord) -> ApiResult<Vec<u8>> {
        let code = base64::engine::general_purpose::STANDARD
            .decode(&f.code)
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("stored code is not base64: {e}")))?;
        let rt = runtime_of(f)?;
        if rt.compiled {
            return super::compile::artifact(&self.config().data_dir, rt.name, &code).await;
        }
        Ok(code)
    }

    /// Makes one call in a VM: a fresh process (exec) or a line to its persistent worker.
    /// The environment every call of `f` runs with: its env, its secrets, its name and size.
    async fn function_env(&self, f: &FunctionRecord) -> ApiResult<BTreeMap<String, String>> {
        let mut env = env_of(f);
        env.extend(self.secret_env(&secrets_of(f)).await?);
        env.insert("HEARTH_FUNCTION".into(), f.name.clone());
        env.insert("HEARTH_MEMORY_MIB".into(), f.memory_mib.to_string());
        Ok(env)
    }

    /// The command and environment of `f`'s persistent worker, exactly as its calls start
    /// it (so a worker started ahead, before a snapshot, serves them).
    pub(crate) async fn worker_command(
        &self,
        f: &FunctionRecord,
    ) -> ApiResult<(Vec<String>, BTreeMap<String, String>)> {
        let rt = runtime_of(f)?;
        let env = self.function_env(f).await?;
        let call = Call::new(rt, f, env, "null", "", None, 0);
        Ok((call.argv, call.env))
    }

    async fn run_call(&self, vm: &str, call: &Call, timeout_s: u64) -> ApiResult<Ran> {
        if call.persistent {
            let out = self
                .call_worker(
                    vm,
                    call.argv.clone(),
                    call.env.clone(),
                    Some(call.line.clone()),
                    timeout_s,
                )
                .await?;
            return Ok(Ran {
                reply: out.line,
                logs: out.logs,
                exit_code: out.exit_code,
                timed_out: out.timed_out,
            });
        }
        let out = self
            .exec_vm(
                vm,
                ExecVm {
                    command: call.argv.clone(),
                    env: call.env.clone(),
                    stdin: Some(call.line.clone()),
                    timeout_s: Some(timeout_s),
                    cwd: Some("/code".into()),
                },
            )
            .await?;
        Ok(Ran {
            reply: Some(out.stdout),
            logs: out.stderr,
            exit_code: Some(out.exit_code),
            timed_out: out.timed_out,
        })
    }
}

/// Whether code is an archive to unpack into /code rather than one file, and tar's flag
/// for it: `-x` for a tar, `-xz` for a gzipped one.
pub(crate) fn archive_kind(code: &[u8]) -> Option<&'static str> {
    if code.starts_with(&[0x1f, 0x8b]) {
        Some("-xz")
    } else if code.get(257..262) == Some(b"ustar") {
        Some("-x")
    } else {
        None
    }
}

/// The function's runtime; an error when this version of Hearth no longer has it.
pub(crate) fn runtime_of(f: &FunctionRecord) -> ApiResult<&'static Runtime> {
    runtime::find(&f.runtime).ok_or_else(|| {
        ApiError::Conflict(format!(
            "function {} uses the runtime {:?}, which this Hearth does not have",
            f.name, f.runtime
        ))
    })
}

/// One invocation, ready to send to a VM.
struct Call {
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    /// The stdin of a fresh process, or the request line of a persistent worker.
    line: String,
    persistent: bool,
    /// Whether the answer is a `{"ok"|"error"}` reply (everything but native in process
    /// mode, whose stdout is the result itself).
    envelope: bool,
}

impl Call {
    fn new(
        rt: &Runtime,
        f: &FunctionRecord,
        mut env: BTreeMap<String, String>,
        event: &str,
        invocation_id: &str,
        version: Option<u32>,
        deadline_ms: i64,
    ) -> Call {
        let persistent = f.mode == "persistent";
        let mut argv: Vec<String> = rt.command.iter().map(|a| a.to_string()).collect();
        if rt.kind != RuntimeKind::Native {
            argv.push(if persistent { "persistent" } else { "process" }.into());
        }
        if rt.kind == RuntimeKind::Image {
            argv.push(f.handler.clone());
        }
        let line = if persistent {
            // The worker's environment must stay the same from call to call; what changes
            // per call travels in the line.
            let context = serde_json::json!({
                "invocation_id": invocation_id,
                "function_name": f.name,
                "function_version": version,
                "deadline_ms": deadline_ms,
                "memory_limit_mib": f.memory_mib,
            });
            format!("{{\"event\":{event},\"context\":{context}}}")
        } else {
            env.insert("HEARTH_INVOCATION_ID".into(), invocation_id.into());
            env.insert("HEARTH_DEADLINE_MS".into(), deadline_ms.to_string());
            if let Some(v) = version {
                env.insert("HEARTH_VERSION".into(), v.to_string());
            }
            event.to_string()
        };
        Call {
            argv,
            env,
            line,
            persistent,
            envelope: persistent || rt.kind != RuntimeKind::Native,
        }
    }
}

/// What came back from a VM for one call.
struct Ran {
    reply: Option<String>,
    logs: String,
    /// Set when the process (or the persistent worker) exited.
    exit_code: Option<i32>,
    timed_out: bool,
}

fn fn_error(message: String, stack: Option<String>) -> Option<FnError> {
    Some(FnError { message, stack })
}

/// The last non-empty line of `s`.
fn last_line(s: &str) -> &str {
    s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("")
}

/// The invocation's output and error from what the VM sent back.
fn outcome(ran: &Ran, envelope: bool, timeout_s: u64) -> (serde_json::Value, Option<FnError>) {
    use serde_json::Value;
    if ran.timed_out {
        return (
            Value::Null,
            fn_error(
                format!("the handler did not finish within {timeout_s} s"),
                None,
            ),
        );
    }
    let reply = ran.reply.as_deref().unwrap_or("");
    let exited = |code: i32| {
        let last = last_line(&ran.logs);
        let message = if last.is_empty() {
            format!("the handler exited with code {code}")
        } else {
            last.to_string()
        };
        let stack = (!ran.logs.trim().is_empty()).then(|| ran.logs.clone());
        (Value::Null, fn_error(message, stack))
    };
    if !envelope {
        return match ran.exit_code {
            Some(code) if code != 0 => exited(code),
            _ => match serde_json::from_str::<Value>(reply.trim()) {
                Ok(v) => (v, None),
                Err(_) => (
                    Value::Null,
                    fn_error(
                        format!(
                            "the handler's output is not JSON: {:?}",
                            reply.chars().take(200).collect::<String>()
                        ),
                        None,
                    ),
                ),
            },
        };
    }
    match serde_json::from_str::<Value>(last_line(reply)) {
        Ok(Value::Object(mut m)) if m.contains_key("ok") || m.contains_key("error") => {
            match m.remove("error") {
                Some(Value::Null) | None => (m.remove("ok").unwrap_or(Value::Null), None),
                Some(e) => {
                    let text = |k: &str| e.get(k).and_then(Value::as_str).map(String::from);
                    let message = text("message").unwrap_or_else(|| e.to_string());
                    (Value::Null, fn_error(message, text("stack")))
                }
            }
        }
        _ => match ran.exit_code {
            Some(code) if code != 0 => exited(code),
            _ => (
                Value::Null,
                fn_error(
                    format!(
                        "the runtime's reply is not a result: {:?}",
                        last_line(reply).chars().take(200).collect::<String>()
                    ),
                    None,
                ),
            ),
        },
    }
}

fn parse_event(event: &[u8]) -> ApiResult<String> {
    if event.len() > MAX_EVENT_BYTES {
        return Err(ApiError::PayloadTooLarge(format!(
            "the event is {} bytes; at most {MAX_EVENT_BYTES}",
            event.len()
        )));
    }
    if event.iter().all(u8::is_ascii_whitespace) {
        return Ok("null".into());
    }
    let v: serde_json::Value = serde_json::from_slice(event)
        .map_err(|e| ApiError::bad_request(format!("the event must be JSON: {e}")))?;
    Ok(v.to_string())
}

fn record_of(f: &FunctionRecord, r: &InvokeResult) -> InvocationRecord {
    InvocationRecord {
        id: r.invocation_id.clone(),
        function_id: f.id.clone(),
        status: if r.error.is_some() { "error" } else { "ok" }.into(),
        output: r.output.to_string(),
        error: r.error.as_ref().and_then(|e| serde_json::to_string(e).ok()),
        logs: r.logs.clone(),
        duration_ms: r.duration_ms,
        cold_start: r.cold_start_from,
        created_at_ms: now_ms(),
        version: r.version,
    }
}

/// An invocation that could not run at all (no VM, the function gone).
fn failed_record(id: &str, function_id: &str, message: &str) -> InvocationRecord {
    InvocationRecord {
        id: id.to_string(),
        function_id: function_id.to_string(),
        status: "error".into(),
        output: "null".into(),
        error: serde_json::to_string(&FnError {
            message: message.to_string(),
            stack: None,
        })
        .ok(),
        logs: String::new(),
        duration_ms: 0,
        cold_start: None,
        created_at_ms: now_ms(),
        version: None,
    }
}
