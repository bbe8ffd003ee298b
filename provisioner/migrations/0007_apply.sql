-- Applying a node's host plan through its running agent (`provisioner node apply`):
-- the operator's pending request (cleared when the agent's report arrives) and the
-- agent's last report (JSON model::apply::ApplyReport, or why there is none).
CREATE TABLE node_apply (
    node_id      INTEGER PRIMARY KEY REFERENCES nodes (id) ON DELETE CASCADE,
    requested_at TEXT,
    reported_at  TEXT,
    mac          TEXT,
    report       TEXT,
    error        TEXT
);
