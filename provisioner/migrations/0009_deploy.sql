-- Deploying host images (`provisioner node deploy`/`undeploy`): one row per node,
-- kept across deploys so the generation of its sealed configs only grows.
CREATE TABLE node_deploy (
    node_id           INTEGER PRIMARY KEY REFERENCES nodes (id) ON DELETE CASCADE,
    -- The image of the operator's last deploy, and the version and verity root
    -- hash of its manifest (when asked, then when the last order was issued).
    image             TEXT,
    version           TEXT,
    root_hash         TEXT,
    requested_at      TEXT,
    ordered_at        TEXT,
    -- SHA-256 of the node credential of the last order (the host API's bearer);
    -- never the credential. Cleared by undeploy.
    credential_sha256 TEXT UNIQUE,
    -- Generation of the last sealed config (model::deploy::seal); only grows.
    config_generation INTEGER NOT NULL DEFAULT 0,
    -- When the agent reported this deploy's image written (NULL: not yet), in words.
    written_at        TEXT,
    written           TEXT,
    -- How much the pending clean erases: 'metadata' or 'full'.
    erase             TEXT,
    -- The agent's last deploy or clean progress (heartbeats); `progress_since`:
    -- when it entered this phase.
    progress_phase    TEXT,
    progress_done     INTEGER,
    progress_total    INTEGER,
    progress_since    TEXT,
    progress_at       TEXT,
    -- The last report of the installed host (JSON model::deploy::HostReport).
    host_report       TEXT,
    host_report_at    TEXT
);
