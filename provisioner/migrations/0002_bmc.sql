-- The last power state read from each node's BMC (`provisioner node power` or the
-- daemon's periodic sync); a change is also written to node_history (event 'power').
CREATE TABLE node_power (
    node_id    INTEGER PRIMARY KEY REFERENCES nodes (id) ON DELETE CASCADE,
    state      TEXT NOT NULL,
    checked_at TEXT NOT NULL
);

-- How each node's BMC certificate is checked: 'ca:PATH', 'insecure', or NULL for the
-- public web PKI (nodes.yaml `ca_file` / `insecure`).
ALTER TABLE nodes ADD COLUMN bmc_tls TEXT;
