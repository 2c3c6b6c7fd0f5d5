-- The labels a VM's host must have (JSON object), kept so that moving the VM (a drain, a
-- restart elsewhere) places it under the same constraint.
ALTER TABLE vms ADD COLUMN host_labels TEXT NOT NULL DEFAULT '{}';
