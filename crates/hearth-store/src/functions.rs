//! Functions and their invocations.

use hearth_types::function::ColdStart;
use sqlx::any::AnyRow;

use crate::{col, now_ms, paged, unique, Paged, Result, Store, StoreError};

/// How many invocations are kept per function (older ones are pruned).
pub const KEEP_INVOCATIONS: i64 = 1000;

#[derive(Debug, Clone)]
pub struct FunctionRecord {
    pub id: String,
    pub name: String,
    pub runtime: String,
    pub handler: String,
    pub mode: String,
    pub memory_mib: u64,
    pub timeout_s: u64,
    /// JSON object of strings.
    pub env: String,
    pub min_warm: u32,
    pub max_instances: u32,
    pub idle_ttl_s: u64,
    /// Base64.
    pub code: String,
    pub code_sha256: String,
    pub code_size: u64,
    /// JSON: env variable → secret name.
    pub secrets: String,
    /// Invocations per second accepted (0: no limit).
    pub rate_limit_per_s: u32,
    pub invocations_total: u64,
    pub errors_total: u64,
    pub cold_starts_total: u64,
    pub snapshot_cold_starts_total: u64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone)]
pub struct InvocationRecord {
    pub id: String,
    pub function_id: String,
    pub status: String,
    /// JSON.
    pub output: String,
    /// JSON of the error object, when it failed.
    pub error: Option<String>,
    pub logs: String,
    pub duration_ms: u64,
    /// None for a warm start.
    pub cold_start: Option<ColdStart>,
    pub created_at_ms: i64,
    /// The published version that served it (none: the latest, unpublished).
    pub version: Option<u32>,
}

const COLS: &str = "id, name, runtime, handler, mode, memory_mib, timeout_s, env, min_warm, \
                    max_instances, idle_ttl_s, code, code_sha256, code_size, invocations_total, \
                    errors_total, cold_starts_total, snapshot_cold_starts_total, created_at, updated_at, secrets, \
                    rate_limit_per_s";

fn function(row: &AnyRow) -> Result<FunctionRecord> {
    let u = |name: &str| -> Result<u64> { Ok(col::<i64>(row, name)? as u64) };
    Ok(FunctionRecord {
        id: col(row, "id")?,
        name: col(row, "name")?,
        runtime: col(row, "runtime")?,
        handler: col(row, "handler")?,
        mode: col(row, "mode")?,
        memory_mib: u("memory_mib")?,
        timeout_s: u("timeout_s")?,
        env: col(row, "env")?,
        min_warm: u("min_warm")? as u32,
        max_instances: u("max_instances")? as u32,
        idle_ttl_s: u("idle_ttl_s")?,
        code: col(row, "code")?,
        code_sha256: col(row, "code_sha256")?,
        code_size: u("code_size")?,
        secrets: col(row, "secrets")?,
        rate_limit_per_s: u("rate_limit_per_s")? as u32,
        invocations_total: u("invocations_total")?,
        errors_total: u("errors_total")?,
        cold_starts_total: u("cold_starts_total")?,
        snapshot_cold_starts_total: u("snapshot_cold_starts_total")?,
        created_at_ms: col(row, "created_at")?,
        updated_at_ms: col(row, "updated_at")?,
    })
}

const INVOCATION_COLS: &str = "id, function_id, status, output, error, logs, duration_ms, \
                               cold_start, created_at, version";

fn invocation(row: &AnyRow) -> Result<InvocationRecord> {
    Ok(InvocationRecord {
        id: col(row, "id")?,
        function_id: col(row, "function_id")?,
        status: col(row, "status")?,
        output: col(row, "output")?,
        error: col(row, "error")?,
        logs: col(row, "logs")?,
        duration_ms: col::<i64>(row, "duration_ms")? as u64,
        cold_start: match col::<i64>(row, "cold_start")? {
            0 => None,
            2 => Some(ColdStart::Snapshot),
            _ => Some(ColdStart::Boot),
        },
        created_at_ms: col(row, "created_at")?,
        version: col::<Option<i64>>(row, "version")?.map(|v| v as u32),
    })
}

impl Store {
    pub async fn insert_function(&self, f: &FunctionRecord) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO functions ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
             $11, $12, $13, $14, 0, 0, 0, 0, $15, $15, $16, $17)"
        ))
        .bind(&f.id)
        .bind(&f.name)
        .bind(&f.runtime)
        .bind(&f.handler)
        .bind(&f.mode)
        .bind(f.memory_mib as i64)
        .bind(f.timeout_s as i64)
        .bind(&f.env)
        .bind(i64::from(f.min_warm))
        .bind(i64::from(f.max_instances))
        .bind(f.idle_ttl_s as i64)
        .bind(&f.code)
        .bind(&f.code_sha256)
        .bind(f.code_size as i64)
        .bind(f.created_at_ms)
        .bind(&f.secrets)
        .bind(i64::from(f.rate_limit_per_s))
        .execute(&self.pool)
        .await
        .map_err(|e| {
            unique(e, || {
                format!(
                    "a function named {:?} already exists; update it or pick another name",
                    f.name
                )
            })
        })?;
        Ok(())
    }

    /// A function by name, or by id.
    pub async fn function(&self, name_or_id: &str) -> Result<FunctionRecord> {
        let row = sqlx::query(&format!(
            "SELECT {COLS} FROM functions WHERE name = $1 OR id = $1 \
             ORDER BY CASE WHEN name = $1 THEN 0 ELSE 1 END LIMIT 1"
        ))
        .bind(name_or_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("function {name_or_id:?}")))?;
        function(&row)
    }

    pub async fn functions(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Paged<FunctionRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM functions WHERE id > $1 ORDER BY id LIMIT $2"
        ))
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let items = rows.iter().map(function).collect::<Result<Vec<_>>>()?;
        Ok(paged(items, limit, |f| &f.id))
    }

    /// Replaces what a user may change of a function.
    pub async fn update_function(&self, f: &FunctionRecord) -> Result<()> {
        let res = sqlx::query(
            "UPDATE functions SET handler = $2, mode = $3, memory_mib = $4, timeout_s = $5, \
             env = $6, min_warm = $7, max_instances = $8, idle_ttl_s = $9, code = $10, \
             code_sha256 = $11, code_size = $12, updated_at = $13, secrets = $14, \
             rate_limit_per_s = $15 WHERE id = $1",
        )
        .bind(&f.id)
        .bind(&f.handler)
        .bind(&f.mode)
        .bind(f.memory_mib as i64)
        .bind(f.timeout_s as i64)
        .bind(&f.env)
        .bind(i64::from(f.min_warm))
        .bind(i64::from(f.max_instances))
        .bind(f.idle_ttl_s as i64)
        .bind(&f.code)
        .bind(&f.code_sha256)
        .bind(f.code_size as i64)
        .bind(now_ms())
        .bind(&f.secrets)
        .bind(i64::from(f.rate_limit_per_s))
        .execute(&self.pool)
        .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("function {:?}", f.name)));
        }
        Ok(())
    }

    pub async fn delete_function(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM invocations WHERE function_id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM functions WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records an invocation, counts it, and prunes the function's oldest ones.
    pub async fn record_invocation(&self, i: &InvocationRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO invocations (id, function_id, status, output, error, logs, \
             duration_ms, cold_start, created_at, version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&i.id)
        .bind(&i.function_id)
        .bind(&i.status)
        .bind(&i.output)
        .bind(&i.error)
        .bind(&i.logs)
        .bind(i.duration_ms as i64)
        .bind(cold_start_code(i.cold_start))
        .bind(i.created_at_ms)
        .bind(i.version.map(i64::from))
        .execute(&self.pool)
        .await?;
        self.count_invocation(i).await
    }

    /// Counts a finished invocation and prunes the function's oldest ones.
    async fn count_invocation(&self, i: &InvocationRecord) -> Result<()> {
        sqlx::query(
            "UPDATE functions SET invocations_total = invocations_total + 1, \
             errors_total = errors_total + $2, cold_starts_total = cold_starts_total + $3, \
             snapshot_cold_starts_total = snapshot_cold_starts_total + $4 WHERE id = $1",
        )
        .bind(&i.function_id)
        .bind(i64::from(i.status != "ok"))
        .bind(i64::from(i.cold_start.is_some()))
        .bind(i64::from(i.cold_start == Some(ColdStart::Snapshot)))
        .execute(&self.pool)
        .await?;
        sqlx::query(
            "DELETE FROM invocations WHERE function_id = $1 AND id < \
             (SELECT id FROM invocations WHERE function_id = $1 ORDER BY id DESC \
              LIMIT 1 OFFSET $2)",
        )
        .bind(&i.function_id)
        .bind(KEEP_INVOCATIONS - 1)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn invocation(&self, id: &str) -> Result<InvocationRecord> {
        let row = sqlx::query(&format!(
            "SELECT {INVOCATION_COLS} FROM invocations WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("invocation {id:?}")))?;
        invocation(&row)
    }

    /// Invocations and failures per minute since `since_ms` (a Unix time in milliseconds),
    /// across all functions, as `(minute, invocations, errors)` oldest first; minutes with
    /// none are absent.
    pub async fn invocations_per_minute(&self, since_ms: i64) -> Result<Vec<(i64, u64, u64)>> {
        let rows = sqlx::query(
            "SELECT created_at / 60000 AS minute, COUNT(*) AS n, \
             SUM(CASE WHEN status = 'ok' THEN 0 ELSE 1 END) AS errors \
             FROM invocations WHERE created_at >= $1 GROUP BY created_at / 60000 ORDER BY minute",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let minute: i64 = col(r, "minute")?;
                let n: i64 = col(r, "n")?;
                let errors: i64 = col(r, "errors")?;
                Ok((minute, n.max(0) as u64, errors.max(0) as u64))
            })
            .collect()
    }

    /// The newest invocations of a function, newest first.
    pub async fn invocations(
        &self,
        function_id: &str,
        limit: u32,
    ) -> Result<Vec<InvocationRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {INVOCATION_COLS} FROM invocations WHERE function_id = $1 \
                 ORDER BY id DESC LIMIT $2"
        ))
        .bind(function_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(invocation).collect()
    }
}

#[derive(Debug, Clone)]
pub struct ScheduleRecord {
    pub id: String,
    pub function_id: String,
    pub expr: String,
    /// JSON.
    pub event: String,
    pub next_run_at_ms: i64,
    pub last_run_at_ms: Option<i64>,
    pub created_at_ms: i64,
}

fn schedule(row: &AnyRow) -> Result<ScheduleRecord> {
    Ok(ScheduleRecord {
        id: col(row, "id")?,
        function_id: col(row, "function_id")?,
        expr: col(row, "expr")?,
        event: col(row, "event")?,
        next_run_at_ms: col(row, "next_run_at")?,
        last_run_at_ms: col(row, "last_run_at")?,
        created_at_ms: col(row, "created_at")?,
    })
}

const SCHEDULE_COLS: &str = "id, function_id, expr, event, next_run_at, last_run_at, created_at";

/// `invocations.cold_start`: 0 warm, 1 booted, 2 restored from a snapshot.
fn cold_start_code(c: Option<ColdStart>) -> i64 {
    match c {
        None => 0,
        Some(ColdStart::Boot) => 1,
        Some(ColdStart::Snapshot) => 2,
    }
}

/// The insert of a queued invocation, for the pool or a transaction to run.
fn insert_queued<'q>(
    id: &'q str,
    function_id: &'q str,
    event: &'q str,
    version: Option<u32>,
    schedule_id: Option<&'q str>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    sqlx::query(
        "INSERT INTO invocations (id, function_id, status, output, error, logs, duration_ms, \
         cold_start, created_at, event, version, schedule_id) \
         VALUES ($1, $2, 'queued', 'null', NULL, '', 0, 0, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(function_id)
    .bind(now_ms())
    .bind(event)
    .bind(version.map(i64::from))
    .bind(schedule_id)
}

/// A queued invocation, as a manager takes it.
#[derive(Debug, Clone)]
pub struct QueuedInvocation {
    pub id: String,
    pub function_id: String,
    pub event: String,
    /// The published version to run (none: the latest).
    pub version: Option<u32>,
}

impl Store {
    /// Queues an invocation to run in the background.
    pub async fn queue_invocation(
        &self,
        id: &str,
        function_id: &str,
        event: &str,
        version: Option<u32>,
    ) -> Result<()> {
        insert_queued(id, function_id, event, version, None)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Takes a queued invocation for this manager to run; false when another took it.
    pub async fn take_invocation(&self, id: &str) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE invocations SET status = 'running' WHERE id = $1 AND status = 'queued'",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Queued invocations, oldest first.
    pub async fn queued_invocations(&self, limit: u32) -> Result<Vec<QueuedInvocation>> {
        let rows = sqlx::query(
            "SELECT id, function_id, event, version FROM invocations WHERE status = 'queued' \
             ORDER BY id LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(QueuedInvocation {
                    id: col(r, "id")?,
                    function_id: col(r, "function_id")?,
                    event: col::<Option<String>>(r, "event")?.unwrap_or_else(|| "null".into()),
                    version: col::<Option<i64>>(r, "version")?.map(|v| v as u32),
                })
            })
            .collect()
    }

    /// Records how a queued or running invocation ended, and counts it.
    pub async fn finish_invocation(&self, i: &InvocationRecord) -> Result<()> {
        sqlx::query(
            "UPDATE invocations SET status = $2, output = $3, error = $4, logs = $5, \
             duration_ms = $6, cold_start = $7, version = $8 WHERE id = $1",
        )
        .bind(&i.id)
        .bind(&i.status)
        .bind(&i.output)
        .bind(&i.error)
        .bind(&i.logs)
        .bind(i.duration_ms as i64)
        .bind(cold_start_code(i.cold_start))
        .bind(i.version.map(i64::from))
        .execute(&self.pool)
        .await?;
        self.count_invocation(i).await
    }

    /// Invocations left `running` by a manager that stopped: they end as errors (running
    /// them again could repeat what they did).
    pub async fn abandon_running_invocations(&self, message: &str) -> Result<u64> {
        let res = sqlx::query(
            "UPDATE invocations SET status = 'error', error = $1 WHERE status = 'running'",
        )
        .bind(message)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected())
    }

    pub async fn insert_schedule(&self, s: &ScheduleRecord) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO schedules ({SCHEDULE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        ))
        .bind(&s.id)
        .bind(&s.function_id)
        .bind(&s.expr)
        .bind(&s.event)
        .bind(s.next_run_at_ms)
        .bind(s.last_run_at_ms)
        .bind(s.created_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn schedules(&self, function_id: &str) -> Result<Vec<ScheduleRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {SCHEDULE_COLS} FROM schedules WHERE function_id = $1 ORDER BY id"
        ))
        .bind(function_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(schedule).collect()
    }

    pub async fn delete_schedule(&self, function_id: &str, id: &str) -> Result<()> {
        let res = sqlx::query("DELETE FROM schedules WHERE id = $1 AND function_id = $2")
            .bind(id)
            .bind(function_id)
            .execute(&self.pool)
            .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("schedule {id:?}")));
        }
        Ok(())
    }

    /// Schedules whose run is due.
    pub async fn due_schedules(&self, now: i64, limit: u32) -> Result<Vec<ScheduleRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {SCHEDULE_COLS} FROM schedules WHERE next_run_at <= $1 \
             ORDER BY next_run_at LIMIT $2"
        ))
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(schedule).collect()
    }

    /// Claims a schedule's due run: moves `next_run_at` from `due` to `next` and queues its
    /// invocation, in one transaction. False when another manager claimed it first.
    pub async fn claim_schedule_run(
        &self,
        s: &ScheduleRecord,
        next: i64,
        invocation_id: &str,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let res = sqlx::query(
            "UPDATE schedules SET next_run_at = $3, last_run_at = $2 \
             WHERE id = $1 AND next_run_at = $2",
        )
        .bind(&s.id)
        .bind(s.next_run_at_ms)
        .bind(next)
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_queued(invocation_id, &s.function_id, &s.event, None, Some(&s.id))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }
}

#[derive(Debug, Clone)]
pub struct VersionRecord {
    pub function_id: String,
    pub version: u32,
    pub handler: String,
    pub mode: String,
    pub memory_mib: u64,
    pub timeout_s: u64,
    pub env: String,
    pub code: String,
    pub code_sha256: String,
    pub code_size: u64,
    pub created_at_ms: i64,
}

const VERSION_COLS: &str = "function_id, version, handler, mode, memory_mib, timeout_s, env, \
                            code, code_sha256, code_size, created_at";

fn version(row: &AnyRow) -> Result<VersionRecord> {
    let u = |name: &str| -> Result<u64> { Ok(col::<i64>(row, name)? as u64) };
    Ok(VersionRecord {
        function_id: col(row, "function_id")?,
        version: u("version")? as u32,
        handler: col(row, "handler")?,
        mode: col(row, "mode")?,
        memory_mib: u("memory_mib")?,
        timeout_s: u("timeout_s")?,
        env: col(row, "env")?,
        code: col(row, "code")?,
        code_sha256: col(row, "code_sha256")?,
        code_size: u("code_size")?,
        created_at_ms: col(row, "created_at")?,
    })
}

#[derive(Debug, Clone)]
pub struct AliasRecord {
    pub function_id: String,
    pub name: String,
    /// JSON: {"<version>": weight}
    pub routes: String,
    pub updated_at_ms: i64,
}

fn alias(row: &AnyRow) -> Result<AliasRecord> {
    Ok(AliasRecord {
        function_id: col(row, "function_id")?,
        name: col(row, "name")?,
        routes: col(row, "routes")?,
        updated_at_ms: col(row, "updated_at")?,
    })
}

impl Store {
    /// Publishes the function as it is now as its next version.
    pub async fn publish_version(&self, f: &FunctionRecord) -> Result<VersionRecord> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "SELECT COALESCE(MAX(version), 0) AS v FROM function_versions WHERE function_id = $1",
        )
        .bind(&f.id)
        .fetch_one(&mut *tx)
        .await?;
        let next = col::<i64>(&row, "v")? + 1;
        let v = VersionRecord {
            function_id: f.id.clone(),
            version: next as u32,
            handler: f.handler.clone(),
            mode: f.mode.clone(),
            memory_mib: f.memory_mib,
            timeout_s: f.timeout_s,
            env: f.env.clone(),
            code: f.code.clone(),
            code_sha256: f.code_sha256.clone(),
            code_size: f.code_size,
            created_at_ms: now_ms(),
        };
        sqlx::query(&format!(
            "INSERT INTO function_versions ({VERSION_COLS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(&v.function_id)
        .bind(next)
        .bind(&v.handler)
        .bind(&v.mode)
        .bind(v.memory_mib as i64)
        .bind(v.timeout_s as i64)
        .bind(&v.env)
        .bind(&v.code)
        .bind(&v.code_sha256)
        .bind(v.code_size as i64)
        .bind(v.created_at_ms)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            unique(e, || {
                "another version was published at the same time; retry".into()
            })
        })?;
        tx.commit().await?;
        Ok(v)
    }

    pub async fn version(&self, function_id: &str, v: u32) -> Result<VersionRecord> {
        let row = sqlx::query(&format!(
            "SELECT {VERSION_COLS} FROM function_versions WHERE function_id = $1 AND version = $2"
        ))
        .bind(function_id)
        .bind(i64::from(v))
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("version {v}")))?;
        version(&row)
    }

    pub async fn versions(&self, function_id: &str) -> Result<Vec<VersionRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {VERSION_COLS} FROM function_versions WHERE function_id = $1 ORDER BY version"
        ))
        .bind(function_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(version).collect()
    }

    pub async fn set_alias(&self, a: &AliasRecord) -> Result<()> {
        let updated = sqlx::query(
            "UPDATE function_aliases SET routes = $3, updated_at = $4 \
             WHERE function_id = $1 AND name = $2",
        )
        .bind(&a.function_id)
        .bind(&a.name)
        .bind(&a.routes)
        .bind(a.updated_at_ms)
        .execute(&self.pool)
        .await?;
        if updated.rows_affected() == 0 {
            sqlx::query(
                "INSERT INTO function_aliases (function_id, name, routes, updated_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(&a.function_id)
            .bind(&a.name)
            .bind(&a.routes)
            .bind(a.updated_at_ms)
            .execute(&self.pool)
            .await
            .map_err(|e| {
                unique(e, || {
                    format!("alias {:?} was set at the same time; retry", a.name)
                })
            })?;
        }
        Ok(())
    }

    pub async fn alias(&self, function_id: &str, name: &str) -> Result<AliasRecord> {
        let row = sqlx::query(
            "SELECT function_id, name, routes, updated_at FROM function_aliases \
             WHERE function_id = $1 AND name = $2",
        )
        .bind(function_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("alias {name:?}")))?;
        alias(&row)
    }

    pub async fn aliases(&self, function_id: &str) -> Result<Vec<AliasRecord>> {
        let rows = sqlx::query(
            "SELECT function_id, name, routes, updated_at FROM function_aliases \
             WHERE function_id = $1 ORDER BY name",
        )
        .bind(function_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(alias).collect()
    }

    pub async fn delete_alias(&self, function_id: &str, name: &str) -> Result<()> {
        let res = sqlx::query("DELETE FROM function_aliases WHERE function_id = $1 AND name = $2")
            .bind(function_id)
            .bind(name)
            .execute(&self.pool)
            .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("alias {name:?}")));
        }
        Ok(())
    }
}
