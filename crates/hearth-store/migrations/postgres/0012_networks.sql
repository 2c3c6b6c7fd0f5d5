-- Managed networks. A VM on one has `network_id`, and its address and MAC; the unique index
-- is the address book: an address in use cannot be handed out again, and deleting the VM
-- releases it. `network` keeps the network's name (networks are never renamed).
CREATE TABLE networks (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    cidr TEXT NOT NULL,
    gateway TEXT NOT NULL,
    bridge TEXT,
    dns TEXT NOT NULL DEFAULT '[]',
    created_at BIGINT NOT NULL
);
ALTER TABLE vms ADD COLUMN network_id TEXT;
ALTER TABLE vms ADD COLUMN ip TEXT;
ALTER TABLE vms ADD COLUMN mac TEXT;
ALTER TABLE vms ADD COLUMN network_note TEXT;
CREATE UNIQUE INDEX vms_network_ip ON vms (network_id, ip);
CREATE UNIQUE INDEX vms_mac ON vms (mac);
