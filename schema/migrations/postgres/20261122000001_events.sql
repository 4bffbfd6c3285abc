-- The log. One row per event; never updated, never deleted.
--
-- position: the global order. Appends take a transaction-scoped advisory lock before drawing
-- positions and hold it until commit (docs/adr/0001-postgres-global-order.md), so positions
-- become visible in increasing order even with many writing processes.
-- data, metadata: canonical JSON text (see chatledger-core `canonical`), kept byte for byte so
-- the hash chain can be recomputed from what is stored; cast to jsonb to query them.
-- hash: lowercase hex SHA-256 over the stream's previous hash and the canonical bytes.
CREATE TABLE events (
    position       BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id       UUID        NOT NULL UNIQUE,
    stream         TEXT        NOT NULL,
    version        BIGINT      NOT NULL CHECK (version >= 0),
    event_type     TEXT        NOT NULL,
    schema_version INTEGER     NOT NULL,
    data           TEXT        NOT NULL,
    metadata       TEXT        NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL,
    hash           TEXT        NOT NULL,
    CONSTRAINT events_stream_version UNIQUE (stream, version)
);
