-- Operators, kept at the issuer host for the whole fleet: an operator logs in at any site (the
-- site asks the host to check the password) and is disabled everywhere at once. `role` is the
-- role's wire name (`teller`, `group_operator`, …); `password_hash` an argon2 PHC string that
-- never leaves the host.
CREATE TABLE operators (
    username            TEXT        PRIMARY KEY CHECK (username ~ '^[A-Za-z0-9_.-]{1,32}$'),
    display_name        TEXT        NOT NULL CHECK (length(display_name) BETWEEN 1 AND 64),
    role                TEXT        NOT NULL CHECK (role IN ('teller', 'supervisor', 'group_operator', 'auditor', 'kiosk', 'admin')),
    group_id            TEXT        CHECK (group_id IS NULL OR length(group_id) BETWEEN 1 AND 64),
    disabled            BOOLEAN     NOT NULL DEFAULT false,
    password_hash       TEXT        NOT NULL CHECK (password_hash LIKE '$argon2%'),
    created_at          TIMESTAMPTZ NOT NULL,
    password_changed_at TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL,
    CHECK ((role = 'group_operator') = (group_id IS NOT NULL))
);
