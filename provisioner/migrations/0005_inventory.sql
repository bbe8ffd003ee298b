-- When the node's inventory (nodes.inventory, JSON) arrived, and from which boot MAC.
ALTER TABLE nodes ADD COLUMN inventory_at TEXT;
ALTER TABLE nodes ADD COLUMN inventory_mac TEXT;

-- The last heartbeat of the inspection agent booted from each MAC.
CREATE TABLE agent_heartbeats (
    mac        TEXT PRIMARY KEY,
    node       TEXT,
    state      TEXT    NOT NULL,
    uptime_s   INTEGER NOT NULL,
    last_error TEXT,
    at         TEXT    NOT NULL
);
