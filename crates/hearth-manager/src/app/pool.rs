//! Each function's pool of warm VMs.
//!
//! An invocation takes an idle VM running the function's current code; when there is none
//! and the pool may grow (fewer than `max_instances`), it boots one, but only one at a time
//! per function: a burst of calls waits for that boot instead of starting a VM each
//! (singleflight). Callers beyond what the pool can serve wait in a bounded queue for at most
//! the function's timeout; past the queue's bound they get 429 with `Retry-After`.
//!
//! A VM goes back to the pool after a call unless it misbehaved (timed out, or its agent or
//! guest failed) or runs code that is no longer current: those are deleted. The janitor
//! ([`Pools::tick`]) retires VMs idle for longer than `idle_ttl_s` beyond `min_warm` and
//! boots VMs up to `min_warm`.
//!
//! Pools live in this manager's memory; their VMs are ordinary VM records tagged with the
//! function's id, so a manager that restarts deletes the ones it no longer tracks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hearth_agent_api::pb;
use hearth_store::FunctionRecord;
use hearth_types::function::ColdStart;
use hearth_types::vm::{CreateVm, VmState};

use hearth_types::runtime::RuntimeKind;

use super::App;
use crate::error::{ApiError, ApiResult};

/// How long a new VM may take to boot and take its code.
const BOOT_TIMEOUT_S: u64 = 180;
/// A queued call waits at most the function's timeout plus this.
const QUEUE_GRACE_S: u64 = 60;

#[derive(Debug, Clone)]
pub struct Instance {
    pub vm_id: String,
    code_sha: String,
    memory_mib: u64,
    last_used: Instant,
}

impl Instance {
    /// A VM that now runs `f` as it is.
    fn new(vm_id: String, f: &FunctionRecord) -> Instance {
        Instance {
            vm_id,
            code_sha: f.code_sha256.clone(),
            memory_mib: f.memory_mib,
            last_used: Instant::now(),
        }
    }
}

#[derive(Default)]
struct State {
    idle: Vec<Instance>,
    busy: u32,
    starting: u32,
    waiting: u32,
    /// The function was deleted: every VM retires.
    gone: bool,
}

#[derive(Default)]
struct Pool {
    state: Mutex<State>,
    changed: tokio::sync::Notify,
    /// What the pool's VMs run: the function, or one of its published versions.
    spec: Mutex<Option<FunctionRecord>>,
}

#[derive(Default)]
pub struct Pools {
    by_function: Mutex<HashMap<String, Arc<Pool>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether an instance can serve the function as it is now.
fn current(i: &Instance, f: &FunctionRecord) -> bool {
    i.code_sha == f.code_sha256 && i.memory_mib == f.memory_mib
}

impl Pools {
    /// The pool for `key` (a function's id, or `id@vN` for a published version), running
    /// `f` from now on.
    fn pool(&self, key: &str, f: &FunctionRecord) -> Arc<Pool> {
        let pool = lock(&self.by_function)
            .entry(key.to_string())
            .or_default()
            .clone();
        *lock(&pool.spec) = Some(f.clone());
        pool
    }

    /// A VM for one invocation, and how it was started for it (None: it was warm).
    pub async fn acquire(
        &self,
        app: &App,
        key: &str,
        f: &FunctionRecord,
    ) -> ApiResult<(Instance, Option<ColdStart>)> {
        let pool = self.pool(key, f);
        let queue_limit = (f.max_instances * 8).min(256);
        // Long enough for a VM to boot and a call to finish before ours.
        let wait = Duration::from_secs(f.timeout_s + QUEUE_GRACE_S);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = pool.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut st = lock(&pool.state);
                let stale: Vec<Instance> = {
                    let (keep, stale) = st.idle.drain(..).partition(|i| current(i, f));
                    st.idle = keep;
                    stale
                };
                for i in stale {
                    retire(app, i.vm_id);
                }
                if let Some(mut i) = st.idle.pop() {
                    st.busy += 1;
                    i.last_used = Instant::now();
                    return Ok((i, None));
                }
                if st.starting == 0 && st.busy + st.starting < f.max_instances {
                    st.starting += 1;
                    break;
                }
                if st.waiting >= queue_limit {
                    return Err(ApiError::TooManyRequests {
                        message: format!(
                            "function {} is at max_instances ({}) with {} calls queued; retry",
                            f.name, f.max_instances, st.waiting
                        ),
                        retry_after_s: 1,
                    });
                }
                st.waiting += 1;
            }
            let woken = tokio::select! {
                _ = changed => true,
                _ = tokio::time::sleep_until(deadline) => false,
            };
            lock(&pool.state).waiting -= 1;
            if !woken {
                return Err(ApiError::TooManyRequests {
                    message: format!(
                        "function {} had no free VM within {} s (max_instances {}); retry",
                        f.name,
                        wait.as_secs(),
                        f.max_instances
                    ),
                    retry_after_s: 1,
                });
            }
        }
        let started = start(app, f).await;
        let mut st = lock(&pool.state);
        st.starting -= 1;
        pool.changed.notify_waiters();
        match started {
            Ok((i, how)) => {
                st.busy += 1;
                Ok((i, Some(how)))
            }
            Err(e) => Err(e),
        }
    }

    /// Gives a VM back after a call; `healthy: false` retires it.
    pub fn release(
        &self,
        app: &App,
        key: &str,
        f: &FunctionRecord,
        mut i: Instance,
        healthy: bool,
    ) {
        // A pool that is gone (the function was deleted) takes nothing back.
        let Some(pool) = lock(&self.by_function).get(key).cloned() else {
            retire(app, i.vm_id);
            return;
        };
        let mut st = lock(&pool.state);
        st.busy = st.busy.saturating_sub(1);
        if healthy && !st.gone && current(&i, f) {
            i.last_used = Instant::now();
            st.idle.push(i);
        } else {
            retire(app, i.vm_id);
        }
        pool.changed.notify_waiters();
    }

    /// After a function changed: idle VMs that no longer fit it retire now.
    pub fn refresh(&self, app: &App, f: &FunctionRecord) {
        let pool = self.pool(&f.id, f);
        let mut st = lock(&pool.state);
        let (keep, stale): (Vec<_>, Vec<_>) = st.idle.drain(..).partition(|i| current(i, f));
        st.idle = keep;
        for i in stale {
            retire(app, i.vm_id);
        }
        pool.changed.notify_waiters();
    }

    /// The pools of a function: its latest and each published version's.
    fn of_function(&self, function_id: &str) -> Vec<(String, Arc<Pool>)> {
        let versions = format!("{function_id}@");
        lock(&self.by_function)
            .iter()
            .filter(|(k, _)| *k == function_id || k.starts_with(&versions))
            .map(|(k, p)| (k.clone(), p.clone()))
            .collect()
    }

    /// After a function was deleted: all its VMs retire (busy ones when their call ends).
    pub fn remove(&self, app: &App, function_id: &str) {
        for (key, pool) in self.of_function(function_id) {
            lock(&self.by_function).remove(&key);
            let mut st = lock(&pool.state);
            st.gone = true;
            for i in st.idle.drain(..) {
                retire(app, i.vm_id);
            }
            pool.changed.notify_waiters();
        }
    }

    /// (idle, busy, starting) VMs of a function, all its versions together.
    pub fn counts(&self, function_id: &str) -> (u32, u32, u32) {
        self.of_function(function_id)
            .iter()
            .fold((0, 0, 0), |(i, b, s), (_, p)| {
                let st = lock(&p.state);
                (i + st.idle.len() as u32, b + st.busy, s + st.starting)
            })
    }

    /// Housekeeping for one function: idle VMs past their TTL retire (down to `min_warm`),
    /// and a VM boots when the pool is below `min_warm`.
    fn tick(&self, app: &App, pool: Arc<Pool>) {
        let Some(f) = lock(&pool.spec).clone() else {
            return;
        };
        let f = &f;
        let mut st = lock(&pool.state);
        let ttl = Duration::from_secs(f.idle_ttl_s);
        st.idle.sort_by_key(|i| std::cmp::Reverse(i.last_used));
        let mut total = st.idle.len() as u32 + st.busy;
        while total > f.min_warm {
            match st.idle.last() {
                Some(i) if i.last_used.elapsed() >= ttl => {
                    let i = st.idle.pop().expect("checked");
                    retire(app, i.vm_id);
                    total -= 1;
                }
                _ => break,
            }
        }
        if st.starting == 0 && total < f.min_warm {
            st.starting += 1;
            let (app, f, pool) = (app.clone(), f.clone(), pool.clone());
            tokio::spawn(async move {
                let booted = boot(&app, &f).await;
                let mut st = lock(&pool.state);
                st.starting -= 1;
                match booted {
                    Ok(i) if !st.gone => st.idle.push(i),
                    Ok(i) => retire(&app, i.vm_id),
                    Err(e) => {
                        tracing::warn!(function = %f.name, error = %e, "pre-warming a VM failed")
                    }
                }
                pool.changed.notify_waiters();
            });
        }
    }

    fn tracked(&self) -> std::collections::HashSet<String> {
        let map = lock(&self.by_function);
        let mut out = std::collections::HashSet::new();
        for p in map.values() {
            let st = lock(&p.state);
            out.extend(st.idle.iter().map(|i| i.vm_id.clone()));
        }
        out
    }
}

/// A function's snapshots kept, newest first (one per host and code, across versions).
const KEEP_SNAPSHOTS: usize = 4;

/// What a function's snapshot holds; a snapshot serves only cold starts of the same.
fn snapshot_key(f: &FunctionRecord) -> String {
    format!(
        "{}:{}:{}:{}",
        f.runtime, f.mode, f.memory_mib, f.code_sha256
    )
}

/// A VM for the function: restored from its snapshot when there is one, else booted (and
/// then snapshotted, so that the next cold start restores).
async fn start(app: &App, f: &FunctionRecord) -> ApiResult<(Instance, ColdStart)> {
    let key = snapshot_key(f);
    for s in app.store().function_snapshots(&f.id, Some(&key)).await? {
        match restore(app, f, &s).await {
            Ok(i) => return Ok((i, ColdStart::Snapshot)),
            Err(e) => {
                // A snapshot that cannot be restored (its host changed or lost it) would
                // fail every cold start: drop it and boot.
                tracing::warn!(function = %f.name, snapshot = %s.name, error = %e,
                    "restoring the function's snapshot failed; booting instead");
                if matches!(e, ApiError::Conflict(_) | ApiError::NotFound(_)) {
                    let _ = app.delete_snapshot(&s.id).await;
                }
            }
        }
    }
    let i = boot(app, f).await?;
    if let Err(e) = snapshot(app, f, &i.vm_id, &key).await {
        tracing::warn!(function = %f.name, error = %e, "snapshotting the function's VM failed");
    }
    Ok((i, ColdStart::Boot))
}

/// A pool VM's name: `<prefix>-<function>-<manager id>-<random>`, so that any manager can
/// tell whose pool it is in.
fn vm_name(prefix: &str, f: &FunctionRecord, app: &App) -> String {
    format!(
        "{prefix}-{}-{}-{}",
        truncate(&f.name, 40),
        app.manager_id(),
        hearth_types::short_suffix()
    )
}

/// The manager whose pool a function VM is in, from its name.
fn owner_of(vm_name: &str) -> Option<&str> {
    let mut parts = vm_name.rsplit('-');
    parts.next()?;
    parts.next().filter(|p| p.len() == 6)
}

/// How long a manager may go unseen before its pools' VMs count as left over.
const MANAGER_GONE_AFTER_MS: i64 = 30_000;

/// Starts the worker of a persistent function, then snapshots the VM, keeping the
/// function's newest few snapshots.
async fn snapshot(app: &App, f: &FunctionRecord, vm: &str, key: &str) -> ApiResult<()> {
    if f.mode == "persistent" {
        let (argv, env) = app.worker_command(f).await?;
        let out = app.call_worker(vm, argv, env, None, BOOT_TIMEOUT_S).await?;
        if out.exit_code.is_some() {
            // A worker that cannot start is not worth saving; the call will say why.
            return Ok(());
        }
    }
    let v = app.store().vm(vm).await?;
    let s = app
        .take_snapshot(&v, vm_name("fnsnap", f, app), Some((&f.id, key)))
        .await?;
    tracing::info!(function = %f.name, snapshot = %s.name, save_ms = s.save_ms, "function snapshot taken");
    let all = app.store().function_snapshots(&f.id, None).await?;
    for old in all.iter().rev().skip(KEEP_SNAPSHOTS) {
        let _ = app.delete_snapshot(&old.id).await;
    }
    Ok(())
}

/// A new VM of the function from snapshot `s`, on the snapshot's host.
async fn restore(
    app: &App,
    f: &FunctionRecord,
    s: &hearth_store::SnapshotRecord,
) -> ApiResult<Instance> {
    let vm = app
        .restore_snapshot_as(s, vm_name("fn", f, app), Some(&f.id))
        .await?;
    if let Err(e) = app.wait_vm(&vm.id, VmState::Running, BOOT_TIMEOUT_S).await {
        retire(app, vm.id);
        return Err(e);
    }
    Ok(Instance::new(vm.id, f))
}

/// Boots a VM for the function and puts its code in place.
async fn boot(app: &App, f: &FunctionRecord) -> ApiResult<Instance> {
    let rt = super::functions::runtime_of(f)?;
    let vm = app
        .create_vm_for(
            CreateVm {
                name: vm_name("fn", f, app),
                image: Some(hearth_types::runtime::image_name(rt)),
                vcpus: Some(1),
                memory_mib: Some(f.memory_mib),
                disk_mib: Some(0),
                // Functions have no network: their calls arrive over the guest channel.
                network: Some("none".into()),
                mac: None,
                ports: Vec::new(),
                user_data: None,
                start: Some(true),
                host_id: None,
                host_labels: Default::default(),
                vmm: None,
            },
            Some(&f.id),
        )
        .await?;
    let ready = async {
        app.wait_vm(&vm.id, VmState::Running, BOOT_TIMEOUT_S)
            .await?;
        let code = app.executable(f).await?;
        match super::functions::archive_kind(&code) {
            Some(flag) if !rt.compiled => unpack(app, &vm.id, code, flag).await,
            _ => {
                let mode = if rt.kind == RuntimeKind::Image {
                    0o644
                } else {
                    0o755
                };
                app.put_file(&vm.id, rt.code_path, code, mode).await
            }
        }
    };
    match ready.await {
        Ok(()) => Ok(Instance::new(vm.id, f)),
        Err(e) => {
            retire(app, vm.id);
            Err(e)
        }
    }
}

/// Puts a code archive into the VM and unpacks it into /code (`flag` tells tar how it is
/// compressed).
async fn unpack(app: &App, vm: &str, archive: Vec<u8>, flag: &str) -> ApiResult<()> {
    const BUNDLE: &str = "/code/.bundle";
    app.put_file(vm, BUNDLE, archive, 0o600).await?;
    let out = app
        .exec_vm(
            vm,
            hearth_types::vm::ExecVm {
                command: ["tar", flag, "-f", BUNDLE, "-C", "/code"]
                    .map(String::from)
                    .to_vec(),
                env: Default::default(),
                stdin: None,
                timeout_s: Some(60),
                cwd: None,
            },
        )
        .await?;
    if out.exit_code != 0 {
        return Err(ApiError::Conflict(format!(
            "the code archive did not unpack: {}",
            out.stderr.trim()
        )));
    }
    Ok(())
}

fn truncate(s: &str, n: usize) -> &str {
    &s[..s.len().min(n)]
}

/// Deletes a pool's VM in the background.
fn retire(app: &App, vm_id: String) {
    let app = app.clone();
    tokio::spawn(async move {
        if let Err(e) = app.delete_vm(&vm_id, false).await {
            tracing::warn!(vm = %vm_id, error = %e, "retiring a function VM failed");
        }
    });
}

impl App {
    pub(crate) fn pools(&self) -> &Pools {
        &self.inner.pools
    }

    /// Writes a file into a running VM through its agent.
    pub(crate) async fn put_file(
        &self,
        vm: &str,
        path: &str,
        data: Vec<u8>,
        mode: u32,
    ) -> ApiResult<()> {
        let v = self.store().vm(vm).await?;
        let host = v
            .host_id
            .as_deref()
            .ok_or_else(|| ApiError::Conflict(format!("VM {} is not placed", v.name)))?;
        let agent = self.host_client(host).await?;
        agent
            .rpc()
            .put_file(agent.request(pb::PutFileRequest {
                id: v.id,
                path: path.into(),
                data,
                mode,
            }))
            .await?;
        Ok(())
    }

    /// Pool housekeeping, every second: TTLs, pre-warming, and deleting function VMs no pool
    /// tracks (left by a previous run of this manager) once at start.
    pub async fn maintain_pools(&self, tick: u64) {
        let first = tick == 0;
        if let Err(e) = self.store().manager_seen(self.manager_id()).await {
            tracing::warn!(error = %e, "recording this manager as alive");
        }
        let mut cursor: Option<String> = None;
        loop {
            let page = match self.store().functions(cursor.as_deref(), 1000).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "listing functions for pool upkeep");
                    return;
                }
            };
            for f in &page.items {
                // The latest's pool follows the function's record (min_warm, TTL, code).
                self.pools().pool(&f.id, f);
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let pools: Vec<Arc<Pool>> = lock(&self.pools().by_function).values().cloned().collect();
        for pool in pools {
            self.pools().tick(self, pool);
        }
        if first || tick.is_multiple_of(10) {
            self.retire_leftovers(first).await;
        }
    }

    /// Deletes the function VMs of managers no longer seen (killed, or an earlier run of
    /// this one); another live manager's are its own business. On the first tick, this
    /// manager has none yet, so its untracked ones are left over too.
    async fn retire_leftovers(&self, first: bool) {
        let since = hearth_store::now_ms() - MANAGER_GONE_AFTER_MS;
        let (Ok(live), Ok(vms)) = (
            self.store().live_managers(since).await,
            self.store().function_vms().await,
        ) else {
            return;
        };
        let tracked = self.pools().tracked();
        for v in vms.into_iter().filter(|v| !tracked.contains(&v.id)) {
            let gone = match owner_of(&v.name) {
                Some(o) if o == self.manager_id() => false,
                Some(o) => !live.contains(o),
                None => first,
            };
            if gone {
                tracing::info!(vm = %v.id, name = %v.name, "deleting a function VM whose manager is gone");
                retire(self, v.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::owner_of;

    #[test]
    fn a_pool_vm_names_its_manager() {
        assert_eq!(owner_of("fn-hello-a1b2c3-d4e5f6"), Some("a1b2c3"));
        assert_eq!(owner_of("fn-my-fn-a1b2c3-d4e5f6"), Some("a1b2c3"));
        // Names from before managers were named in them.
        assert_eq!(owner_of("fn-hello-d4e5f6"), None);
        assert_eq!(owner_of("fn"), None);
    }
}
