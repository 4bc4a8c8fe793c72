-- Vehicle accounts, their cards, recharge records with their history and load transactions.
-- Money is BIGINT fen, times are timestamptz, statuses and actions are the wire names.

CREATE TABLE vehicles (
    colour              SMALLINT    NOT NULL,
    plate               TEXT        NOT NULL,
    owner_name          TEXT        NOT NULL,
    vehicle_class       SMALLINT    NOT NULL,
    obu_contract_serial TEXT,
    details             JSONB,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL,
    updated_by          TEXT        NOT NULL,
    PRIMARY KEY (colour, plate)
);

-- A card belongs to one vehicle; position orders a vehicle's cards (the last is in service).
CREATE TABLE vehicle_cards (
    card_number TEXT     PRIMARY KEY,
    colour      SMALLINT NOT NULL,
    plate       TEXT     NOT NULL,
    position    SMALLINT NOT NULL,
    FOREIGN KEY (colour, plate) REFERENCES vehicles (colour, plate) ON DELETE CASCADE,
    UNIQUE (colour, plate, position)
);

-- The last record sequence of each China day (YYYYMMDD).
CREATE TABLE record_days (
    day      TEXT    PRIMARY KEY,
    last_seq INTEGER NOT NULL CHECK (last_seq > 0)
);

CREATE TABLE recharge_records (
    record_id          TEXT        PRIMARY KEY,
    card_number        TEXT        NOT NULL,
    colour             SMALLINT    NOT NULL,
    plate              TEXT        NOT NULL,
    amount_fen         BIGINT      NOT NULL CHECK (amount_fen > 0),
    balance_before_fen BIGINT      CHECK (balance_before_fen >= 0),
    balance_after_fen  BIGINT      CHECK (balance_after_fen >= 0),
    recharged_at       TIMESTAMPTZ NOT NULL,
    channel            TEXT        NOT NULL,
    status             TEXT        NOT NULL
        CHECK (status IN ('not_loaded', 'loading', 'loaded', 'needs_reconciliation')),
    load_txn_id        TEXT,
    loaded_at          TIMESTAMPTZ
);
CREATE INDEX recharge_records_by_vehicle
    ON recharge_records (colour, plate, recharged_at DESC, record_id DESC);
CREATE INDEX recharge_records_by_card ON recharge_records (card_number, status);

-- A record's changes; seq 0 is the recharge that created it.
CREATE TABLE record_history (
    record_id          TEXT        NOT NULL REFERENCES recharge_records (record_id),
    seq                INTEGER     NOT NULL CHECK (seq >= 0),
    at                 TIMESTAMPTZ NOT NULL,
    operator           TEXT        NOT NULL,
    action             TEXT        NOT NULL CHECK (action IN ('recharge', 'begin_load',
        'finish_load', 'abort_load', 'flag_reconciliation', 'mark_not_loaded',
        'resolve_reconciliation')),
    from_status        TEXT,
    to_status          TEXT        NOT NULL,
    reason             TEXT,
    txn_id             TEXT,
    balance_before_fen BIGINT,
    balance_after_fen  BIGINT,
    PRIMARY KEY (record_id, seq)
);

-- Every journal transaction a record was loaded under: one transaction serves one record.
CREATE TABLE record_txns (
    txn_id    TEXT    PRIMARY KEY,
    record_id TEXT    NOT NULL REFERENCES recharge_records (record_id),
    attempt   INTEGER NOT NULL CHECK (attempt >= 0),
    UNIQUE (record_id, attempt)
);
