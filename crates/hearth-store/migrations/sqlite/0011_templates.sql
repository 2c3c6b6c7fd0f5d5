-- A script the guest runs once, at the VM's first boot (a marker on its disk remembers).
ALTER TABLE vms ADD COLUMN user_data TEXT NOT NULL DEFAULT '';

-- Templates: what a VM is made from (`spec`: JSON of image, size, disk, network, volumes,
-- user data), instantiated into VMs by name.
CREATE TABLE templates (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    spec TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
