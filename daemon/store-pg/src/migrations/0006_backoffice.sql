-- The back office (后台): what each site last reported, and people's verdicts on loads that no
-- card settled.

-- When the site last reported to the host, and how many changes wait in its outbox.
ALTER TABLE sites
    ADD COLUMN last_seen_at   TIMESTAMPTZ,
    ADD COLUMN outbox_pending BIGINT CHECK (outbox_pending >= 0);

-- A person's verdict on an authorised load whose card never settled it (待核对): proposed by one
-- back-office operator, confirmed (or rejected) by another. A confirmed verdict settles the
-- load's record or order; the card is then checked against it at its next authorised load
-- (card_check: waiting -> agreed | contradicted, with the card's evidence).
CREATE TABLE load_verdicts (
    txn_id          TEXT        PRIMARY KEY REFERENCES load_authorizations (txn_id),
    -- The card (its authorisation's card_key), so that a load checks the verdicts on its card
    -- without reading other cards' authorisations.
    card_key        TEXT        NOT NULL,
    landed          BOOLEAN     NOT NULL,
    reason          TEXT        NOT NULL CHECK (length(reason) > 0),
    proposed_by     TEXT        NOT NULL,
    proposed_at     TIMESTAMPTZ NOT NULL,
    state           TEXT        NOT NULL CHECK (state IN ('proposed', 'rejected', 'confirmed')),
    decided_by      TEXT,
    decided_at      TIMESTAMPTZ,
    card_check      TEXT        NOT NULL DEFAULT 'waiting'
        CHECK (card_check IN ('waiting', 'agreed', 'contradicted')),
    card_checked_at TIMESTAMPTZ,
    card_evidence   TEXT,
    CHECK (state = 'proposed' OR decided_by IS NOT NULL)
);
CREATE INDEX load_verdicts_watched ON load_verdicts (card_key)
    WHERE state = 'confirmed' AND card_check = 'waiting';
