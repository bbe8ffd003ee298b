-- Nodes: identity and configuration (from nodes.yaml, the API or discovery),
-- lifecycle status (compare-and-swap on `generation`), and what inspection found.
CREATE TABLE nodes (
    id                 INTEGER PRIMARY KEY,
    name               TEXT    NOT NULL UNIQUE,
    -- Where the node came from: 'site' (nodes.yaml), 'api' or 'discovered'.
    source             TEXT    NOT NULL,
    -- 0 when a site node is no longer in nodes.yaml: reported, never deleted silently.
    in_site            INTEGER NOT NULL DEFAULT 1,
    bmc_url            TEXT,
    bmc_username       TEXT,
    -- A reference to the secret ('env:VAR' or 'file:PATH'), never the secret itself.
    bmc_credential     TEXT,
    boot_mac           TEXT,
    serial             TEXT,
    profile_override   TEXT,
    role_override      TEXT,
    state              TEXT    NOT NULL,
    failed_from        TEXT,
    generation         INTEGER NOT NULL,
    maintenance        INTEGER NOT NULL DEFAULT 0,
    maintenance_reason TEXT,
    last_error         TEXT,
    inventory          TEXT,
    matched_profile    TEXT,
    -- When the current wait state times out (RFC 3339), NULL outside wait states.
    deadline           TEXT,
    created_at         TEXT    NOT NULL,
    updated_at         TEXT    NOT NULL,
    state_since        TEXT    NOT NULL
);
CREATE INDEX nodes_boot_mac ON nodes (boot_mac);
CREATE INDEX nodes_deadline ON nodes (deadline) WHERE deadline IS NOT NULL;

-- Every transition and every configuration change of a node, in order.
CREATE TABLE node_history (
    id         INTEGER PRIMARY KEY,
    node_id    INTEGER NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    at         TEXT    NOT NULL,
    from_state TEXT,
    to_state   TEXT    NOT NULL,
    event      TEXT    NOT NULL,
    reason     TEXT,
    generation INTEGER NOT NULL
);
CREATE INDEX node_history_node ON node_history (node_id, id);

-- DHCP leases handed out in full mode; one address is never bound to two MACs.
CREATE TABLE dhcp_leases (
    mac        TEXT PRIMARY KEY,
    ip         TEXT NOT NULL UNIQUE,
    expires_at TEXT NOT NULL,
    hostname   TEXT,
    state      TEXT NOT NULL
);
