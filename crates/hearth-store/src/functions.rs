//! Functions and their invocations.

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
    pub invocations_total: u64,
    pub errors_total: u64,
    pub cold_starts_total: u64,
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
    pub cold_start: bool,
    pub created_at_ms: i64,
}

const COLS: &str = "id, name, runtime, handler, mode, memory_mib, timeout_s, env, min_warm, \
                    max_instances, idle_ttl_s, code, code_sha256, code_size, invocations_total, \
                    errors_total, cold_starts_total, created_at, updated_at";

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
        invocations_total: u("invocations_total")?,
        errors_total: u("errors_total")?,
        cold_starts_total: u("cold_starts_total")?,
        created_at_ms: col(row, "created_at")?,
        updated_at_ms: col(row, "updated_at")?,
    })
}

fn invocation(row: &AnyRow) -> Result<InvocationRecord> {
    Ok(InvocationRecord {
        id: col(row, "id")?,
        function_id: col(row, "function_id")?,
        status: col(row, "status")?,
        output: col(row, "output")?,
        error: col(row, "error")?,
        logs: col(row, "logs")?,
        duration_ms: col::<i64>(row, "duration_ms")? as u64,
        cold_start: col::<i64>(row, "cold_start")? != 0,
        created_at_ms: col(row, "created_at")?,
    })
}

impl Store {
    pub async fn insert_function(&self, f: &FunctionRecord) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO functions ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
             $11, $12, $13, $14, 0, 0, 0, $15, $15)"
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
             code_sha256 = $11, code_size = $12, updated_at = $13 WHERE id = $1",
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
             duration_ms, cold_start, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&i.id)
        .bind(&i.function_id)
        .bind(&i.status)
        .bind(&i.output)
        .bind(&i.error)
        .bind(&i.logs)
        .bind(i.duration_ms as i64)
        .bind(i64::from(i.cold_start))
        .bind(i.created_at_ms)
        .execute(&self.pool)
        .await?;
        sqlx::query(
            "UPDATE functions SET invocations_total = invocations_total + 1, \
             errors_total = errors_total + $2, cold_starts_total = cold_starts_total + $3 \
             WHERE id = $1",
        )
        .bind(&i.function_id)
        .bind(i64::from(i.status != "ok"))
        .bind(i64::from(i.cold_start))
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
        let row = sqlx::query(
            "SELECT id, function_id, status, output, error, logs, duration_ms, cold_start, \
             created_at FROM invocations WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("invocation {id:?}")))?;
        invocation(&row)
    }

    /// The newest invocations of a function, newest first.
    pub async fn invocations(
        &self,
        function_id: &str,
        limit: u32,
    ) -> Result<Vec<InvocationRecord>> {
        let rows = sqlx::query(
            "SELECT id, function_id, status, output, error, logs, duration_ms, cold_start, \
             created_at FROM invocations WHERE function_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(function_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(invocation).collect()
    }
}
