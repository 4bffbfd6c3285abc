-- The log. One row per event; never updated, never deleted.
--
-- position: the global order. AUTOINCREMENT never reuses a position, and SQLite has a single
-- writer, so positions become visible in increasing order.
-- data, metadata: canonical JSON text (see chatledger-core `canonical`), kept byte for byte so
-- the hash chain can be recomputed from what is stored.
-- hash: lowercase hex SHA-256 over the stream's previous hash and the canonical bytes.
CREATE TABLE events (
    position       INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id       TEXT    NOT NULL UNIQUE,
    stream         TEXT    NOT NULL,
    version        INTEGER NOT NULL CHECK (version >= 0),
    event_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    data           TEXT    NOT NULL,
    metadata       TEXT    NOT NULL,
    recorded_at    TEXT    NOT NULL,
    hash           TEXT    NOT NULL,
    UNIQUE (stream, version)
);
