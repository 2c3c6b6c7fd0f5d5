-- Volumes: disks that outlive VMs. A volume's file lives on one host (`host_id`, set when it
-- is first attached); `vm_id` is the VM it is attached to, if any.
CREATE TABLE volumes (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    size_mib BIGINT NOT NULL,
    host_id TEXT,
    vm_id TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX volumes_vm ON volumes (vm_id);
