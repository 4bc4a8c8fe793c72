-- The fleet: the sites that may connect, and every load the host authorised.

-- A site (teller PC or kiosk), known by the certificate issued to it last.
CREATE TABLE sites (
    site_id          TEXT        PRIMARY KEY,
    enabled          BOOLEAN     NOT NULL,
    cert_fingerprint TEXT        NOT NULL CHECK (cert_fingerprint ~ '^[0-9a-f]{64}$'),
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);

-- One row per authorised load, written in the same transaction that claims its funding.
-- state: authorized (MAC2 given, outcome unknown) -> booked (TAC verified) | released (the
-- card proved the load did not land) | reconcile (a person must decide).
CREATE TABLE load_authorizations (
    txn_id             TEXT        PRIMARY KEY,
    site_id            TEXT        NOT NULL,
    card_number        TEXT        NOT NULL,
    card_key           TEXT        NOT NULL,
    online_atc         INTEGER     NOT NULL CHECK (online_atc BETWEEN 0 AND 65535),
    amount_fen         BIGINT      NOT NULL CHECK (amount_fen > 0),
    balance_before_fen BIGINT      NOT NULL CHECK (balance_before_fen >= 0),
    funding_kind       TEXT        NOT NULL CHECK (funding_kind IN ('etc_record', 'group_order')),
    funding_id         TEXT        NOT NULL,
    request            JSONB       NOT NULL,
    mac2               TEXT        NOT NULL CHECK (mac2 ~ '^[0-9A-F]{8}$'),
    state              TEXT        NOT NULL
        CHECK (state IN ('authorized', 'booked', 'released', 'reconcile')),
    tac                TEXT,
    authorized_at      TIMESTAMPTZ NOT NULL,
    settled_at         TIMESTAMPTZ,
    settled_by         TEXT,
    reason             TEXT
);
CREATE INDEX load_authorizations_by_counter ON load_authorizations (card_key, online_atc);
CREATE INDEX load_authorizations_open ON load_authorizations (card_number) WHERE state = 'authorized';
CREATE INDEX load_authorizations_by_funding ON load_authorizations (funding_kind, funding_id);
