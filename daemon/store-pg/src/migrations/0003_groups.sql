-- Group recharge (集团充值): groups, their append-only quota ledger, recharge orders, quota
-- top-ups and batches. Money is BIGINT fen, times are timestamptz, statuses and ledger kinds
-- are the wire names.

CREATE TABLE groups (
    group_id    TEXT        PRIMARY KEY,
    name        TEXT        NOT NULL,
    terminal_no TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

-- The quota ledger: only ever appended. A group's available quota is the balance after its
-- last entry, so it cannot disagree with the ledger. Each entry starts from its predecessor's
-- balance (the foreign key on (group_id, prev_seq, balance_before_fen)), so the entries of a
-- group form one chain 1, 2, 3, … whose running balance is the sum of the amounts, never below
-- zero nor above the quota limit (QUOTA_FEN_MAX).
CREATE TABLE group_ledger (
    group_id           TEXT        NOT NULL REFERENCES groups (group_id),
    seq                BIGINT      NOT NULL CHECK (seq > 0),
    prev_seq           BIGINT,
    at                 TIMESTAMPTZ NOT NULL,
    kind               TEXT        NOT NULL CHECK (kind IN ('top_up', 'reserve', 'refund')),
    amount_fen         BIGINT      NOT NULL,
    balance_before_fen BIGINT      NOT NULL,
    balance_after_fen  BIGINT      NOT NULL
        CHECK (balance_after_fen BETWEEN 0 AND 10000000000),
    reference          TEXT        NOT NULL,
    operator           TEXT        NOT NULL,
    PRIMARY KEY (group_id, seq),
    UNIQUE (group_id, seq, balance_after_fen),
    CHECK ((seq = 1 AND prev_seq IS NULL AND balance_before_fen = 0)
        OR (seq > 1 AND prev_seq = seq - 1)),
    CHECK (balance_after_fen = balance_before_fen + amount_fen),
    CHECK ((kind = 'reserve' AND amount_fen < 0) OR (kind <> 'reserve' AND amount_fen > 0)),
    FOREIGN KEY (group_id, prev_seq, balance_before_fen)
        REFERENCES group_ledger (group_id, seq, balance_after_fen)
);
CREATE INDEX group_ledger_by_reference ON group_ledger (reference);

-- The last id sequence of each kind (GO orders, GT top-ups, GB batches) and China day.
CREATE TABLE group_id_days (
    prefix   TEXT    NOT NULL,
    day      TEXT    NOT NULL,
    last_seq INTEGER NOT NULL CHECK (last_seq > 0),
    PRIMARY KEY (prefix, day)
);

CREATE TABLE group_batches (
    batch_id   TEXT        PRIMARY KEY,
    group_id   TEXT        NOT NULL REFERENCES groups (group_id),
    operator   TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

-- A batch's cards, in order; order_id is set once, by the reservation that serves the item.
CREATE TABLE group_batch_items (
    batch_id    TEXT    NOT NULL REFERENCES group_batches (batch_id),
    idx         INTEGER NOT NULL CHECK (idx >= 0),
    card_number TEXT    NOT NULL,
    amount_fen  BIGINT  NOT NULL CHECK (amount_fen > 0),
    order_id    TEXT    UNIQUE,
    PRIMARY KEY (batch_id, idx),
    UNIQUE (batch_id, card_number)
);

-- Recharge orders; history is the order's status changes (JSON, capped as the model says).
CREATE TABLE group_orders (
    order_id           TEXT        PRIMARY KEY,
    group_id           TEXT        NOT NULL REFERENCES groups (group_id),
    operator           TEXT        NOT NULL,
    card_number        TEXT        NOT NULL,
    amount_fen         BIGINT      NOT NULL CHECK (amount_fen > 0),
    card_balance_fen   BIGINT      NOT NULL CHECK (card_balance_fen >= 0),
    balance_before_fen BIGINT,
    balance_after_fen  BIGINT,
    quota_before_fen   BIGINT      NOT NULL,
    quota_after_fen    BIGINT      NOT NULL,
    txn_id             TEXT        NOT NULL UNIQUE,
    batch_id           TEXT        REFERENCES group_batches (batch_id),
    batch_index        INTEGER,
    status             TEXT        NOT NULL
        CHECK (status IN ('reserved', 'pending', 'succeeded', 'failed', 'refunded')),
    failure            TEXT,
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL,
    history            JSONB       NOT NULL,
    CHECK (quota_after_fen = quota_before_fen - amount_fen),
    CHECK ((batch_id IS NULL) = (batch_index IS NULL))
);
CREATE INDEX group_orders_by_group ON group_orders (group_id, created_at DESC);
CREATE INDEX group_orders_by_status ON group_orders (status, order_id);
-- At most one unsettled order per card (kept by the reservation's serializable read; this is
-- the backstop).
CREATE UNIQUE INDEX group_orders_unsettled_card ON group_orders (card_number)
    WHERE status IN ('reserved', 'pending');

CREATE TABLE group_topups (
    topup_id     TEXT        PRIMARY KEY,
    group_id     TEXT        NOT NULL REFERENCES groups (group_id),
    operator     TEXT        NOT NULL,
    amount_fen   BIGINT      NOT NULL CHECK (amount_fen > 0),
    remark       TEXT        NOT NULL,
    status       TEXT        NOT NULL
        CHECK (status IN ('pending', 'unknown', 'failed', 'paid', 'approved', 'rejected')),
    bank_serial  TEXT,
    bank_message TEXT,
    auditor      TEXT,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    history      JSONB       NOT NULL
);
CREATE INDEX group_topups_by_group ON group_topups (group_id, created_at DESC);
CREATE INDEX group_topups_by_status ON group_topups (status, topup_id);
