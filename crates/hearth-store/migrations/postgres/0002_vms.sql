-- VMs. `state` is what the agent last observed (`observed_at` by the agent's clock, so a late
-- report never overwrites a newer one); `desired_state` is what the user asked for.
CREATE TABLE vms (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    host_id TEXT,
    image TEXT NOT NULL,
    vcpus BIGINT NOT NULL,
    memory_mib BIGINT NOT NULL,
    vmm TEXT NOT NULL,
    state TEXT NOT NULL,
    desired_state TEXT NOT NULL,
    reason TEXT,
    console_tail TEXT,
    accelerator TEXT,
    boot_ms BIGINT,
    observed_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    started_at BIGINT
);
CREATE INDEX vms_host ON vms (host_id);
