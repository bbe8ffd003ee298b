-- Addresses a DHCP client DECLINEd (another host answers on them), kept out
-- of offers until `until` (RFC 3339, UTC), across restarts.
CREATE TABLE dhcp_declined (
    ip    TEXT PRIMARY KEY,
    until TEXT NOT NULL
);
