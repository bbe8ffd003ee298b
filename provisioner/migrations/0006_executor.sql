-- The lifecycle executor's outbox: the BMC actions of each node's latest transition,
-- written in the same transaction as that transition, so a crash between the commit
-- and the BMC call loses nothing. A newer transition replaces (or removes) the row:
-- only the latest intent is ever carried out.
CREATE TABLE node_jobs (
    node_id    INTEGER PRIMARY KEY REFERENCES nodes (id) ON DELETE CASCADE,
    -- The node generation whose transition produced the actions.
    generation INTEGER NOT NULL,
    -- JSON array of lifecycle actions (boot device, power).
    actions    TEXT    NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    -- Not before (RFC 3339): back-off after a failed attempt.
    next_at    TEXT    NOT NULL,
    last_error TEXT,
    created_at TEXT    NOT NULL
);

-- What a node did during its current wait state (power on, DHCP, iPXE script,
-- agent), so a timeout can say which step never happened. Cleared on every
-- state change.
CREATE TABLE node_progress (
    node_id    INTEGER NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    step       TEXT    NOT NULL,
    at         TEXT    NOT NULL,
    PRIMARY KEY (node_id, step)
);

-- What matching the stored inventory gave (action `match profile`, on inventory): the
-- host plan of the matched profile (JSON, model::plan::HostPlan), or why there is none.
ALTER TABLE nodes ADD COLUMN plan TEXT;
ALTER TABLE nodes ADD COLUMN plan_error TEXT;
