-- Per-boot agent tokens: one per MAC, replaced each time that MAC's iPXE script is
-- rendered. Only the SHA-256 of the token is kept, so a copy of the database does
-- not let anyone act as an agent.
CREATE TABLE boot_tokens (
    mac          TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    -- The node the MAC belonged to when the token was issued (NULL: unknown MAC).
    node         TEXT,
    issued_at    TEXT NOT NULL
);
