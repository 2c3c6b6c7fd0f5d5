-- A VM's network: `none`, or `user` (QEMU user-mode networking: egress through the host,
-- and `ports`, a JSON list of forwards from the host's loopback into the guest).
ALTER TABLE vms ADD COLUMN network TEXT NOT NULL DEFAULT 'none';
ALTER TABLE vms ADD COLUMN ports TEXT NOT NULL DEFAULT '[]';
ALTER TABLE snapshots ADD COLUMN network TEXT NOT NULL DEFAULT 'none';
