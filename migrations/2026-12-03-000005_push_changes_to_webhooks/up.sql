-- Webhooks: subscriptions that push the change feed to other services.
--
-- A subscription follows the feed from `delivered_through`: its worker delivers the next change
-- it asked for, records the attempt, and moves on only once the receiver acknowledged it, so
-- progress survives restarts and every change arrives in seq order. A worker holds a
-- subscription through a lease (`lease_holder` until `lease_until`), taken and renewed with
-- ordinary row updates: it expires by itself when its holder dies, and works through PgBouncer in
-- transaction mode, where a session advisory lock would not.
CREATE TABLE webhook_subscription (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The caller that made it (an API key's digest): for any other it does not exist.
    owner             bytea       NOT NULL,
    url               text        NOT NULL,
    events            text[]      NOT NULL
        CHECK (cardinality(events) > 0 AND events <@ ARRAY['created', 'updated', 'deleted']),
    description       text,
    -- The signing secret: 32 bytes, or sealed (ChaCha20-Poly1305, with `secret_nonce`) when the
    -- service runs with a sealing key, so that a dump of this table alone cannot forge signatures.
    secret            bytea       NOT NULL,
    secret_nonce      bytea,
    status            text        NOT NULL DEFAULT 'active'
        CHECK (status IN ('active', 'paused', 'failing', 'disabled')),
    delivered_through bigint      NOT NULL CHECK (delivered_through >= 0),
    -- The attempts made of the change after `delivered_through`, and since when it fails.
    attempts          integer     NOT NULL DEFAULT 0,
    failing_since     timestamptz,
    last_error        text,
    next_attempt_at   timestamptz,
    lease_holder      text,
    lease_until       timestamptz,
    -- How many attempts were ever logged: the next one goes to slot `logged % 100`.
    logged            bigint      NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX webhook_subscription_owner_idx ON webhook_subscription (owner, id);
-- What the workers look for: active subscriptions (few rows, however many changes).
CREATE INDEX webhook_subscription_active_idx ON webhook_subscription (id) WHERE status = 'active';

-- The latest attempts of each subscription: a ring of 100 slots, each attempt written over the
-- oldest (slot = its ordinal `n` modulo 100), so the log never needs trimming and never grows.
CREATE TABLE webhook_delivery (
    subscription_id bigint      NOT NULL REFERENCES webhook_subscription ON DELETE CASCADE,
    slot            smallint    NOT NULL CHECK (slot >= 0 AND slot < 100),
    n               bigint      NOT NULL,
    seq             bigint      NOT NULL,
    attempt         integer     NOT NULL,
    at              timestamptz NOT NULL,
    status          integer,
    error           text,
    duration_ms     bigint      NOT NULL,
    PRIMARY KEY (subscription_id, slot)
);
