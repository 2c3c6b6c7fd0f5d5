-- A VM's own writable disk, in MiB (0: none, changes live in guest memory).
ALTER TABLE vms ADD COLUMN disk_mib BIGINT NOT NULL DEFAULT 0;

-- Snapshots: a VM's memory and disk saved on its host (the files live there; restoring
-- happens there). `vm_id` is kept after the VM is deleted. `profile` is the JSON of what
-- restoring needs (VMM and version, machine, accelerator, CPU, kernel, devices).
-- `function_id`/`function_key` mark a function's cold-start snapshot and what it holds.
CREATE TABLE snapshots (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    vm_id TEXT NOT NULL,
    vm_name TEXT NOT NULL,
    host_id TEXT NOT NULL,
    image TEXT NOT NULL,
    vcpus BIGINT NOT NULL,
    memory_mib BIGINT NOT NULL,
    disk_mib BIGINT NOT NULL,
    memory_bytes BIGINT NOT NULL,
    disk_bytes BIGINT NOT NULL,
    save_ms BIGINT NOT NULL,
    profile TEXT NOT NULL,
    function_id TEXT,
    function_key TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX snapshots_vm ON snapshots (vm_id);
CREATE INDEX snapshots_function ON snapshots (function_id, function_key);

-- Cold starts served by restoring the function's snapshot rather than booting. In
-- invocations, `cold_start` is 0 (warm), 1 (booted) or 2 (restored from a snapshot).
ALTER TABLE functions ADD COLUMN snapshot_cold_starts_total BIGINT NOT NULL DEFAULT 0;
