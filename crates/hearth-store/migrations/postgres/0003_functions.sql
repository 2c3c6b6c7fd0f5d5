-- Functions and their invocations. The code is kept here (base64, bounded by the API) so any
-- manager can hand it to any host. Totals are counters; invocation rows are pruned to the
-- newest per function.
CREATE TABLE functions (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    runtime TEXT NOT NULL,
    handler TEXT NOT NULL,
    mode TEXT NOT NULL,
    memory_mib BIGINT NOT NULL,
    timeout_s BIGINT NOT NULL,
    env TEXT NOT NULL,
    min_warm BIGINT NOT NULL,
    max_instances BIGINT NOT NULL,
    idle_ttl_s BIGINT NOT NULL,
    code TEXT NOT NULL,
    code_sha256 TEXT NOT NULL,
    code_size BIGINT NOT NULL,
    invocations_total BIGINT NOT NULL DEFAULT 0,
    errors_total BIGINT NOT NULL DEFAULT 0,
    cold_starts_total BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE invocations (
    id TEXT PRIMARY KEY,
    function_id TEXT NOT NULL REFERENCES functions(id) ON DELETE CASCADE,
    status TEXT NOT NULL,
    output TEXT NOT NULL,
    error TEXT,
    logs TEXT NOT NULL,
    duration_ms BIGINT NOT NULL,
    cold_start BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX invocations_function ON invocations (function_id, id);

-- A VM that serves a function's pool names it; such VMs are managed by the pool.
ALTER TABLE vms ADD COLUMN function_id TEXT;
