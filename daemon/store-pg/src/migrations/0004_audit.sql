-- The host's hash-chained audit log: one chain per site (and one, "host", for the host's own
-- commands), so that sites do not contend for one chain. Each record's hash covers the previous
-- record's hash and every field; `detail` is kept as the exact JSON text that was hashed.
CREATE TABLE host_audit (
    chain     TEXT        NOT NULL,
    seq       BIGINT      NOT NULL CHECK (seq > 0),
    at        TIMESTAMPTZ NOT NULL,
    actor     TEXT        NOT NULL,
    action    TEXT        NOT NULL,
    target    TEXT,
    detail    TEXT        NOT NULL,
    outcome   TEXT        NOT NULL,
    prev_hash TEXT        NOT NULL,
    hash      TEXT        NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$'),
    PRIMARY KEY (chain, seq)
);
