-- API keys. Only the SHA-256 digest of a key is stored; the key itself is shown once at creation.
-- Revoked keys stay, for the record, and free their name for a new key.
CREATE TABLE api_key (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       varchar(64) NOT NULL,
    scope      text        NOT NULL CHECK (scope IN ('read', 'write')),
    digest     bytea       NOT NULL UNIQUE CHECK (length(digest) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

CREATE UNIQUE INDEX api_key_active_name_idx ON api_key (name) WHERE revoked_at IS NULL;
