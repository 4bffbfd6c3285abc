-- The read models of a SQLite log live in a file of their own beside it (ADR 9), so that
-- projecting never holds the lock the log's writer needs. This is that file's registry: one row
-- per projector, which generation of its tables is live, and the position of the last event
-- those tables reflect (as `projections` in the log's own migrations, which PostgreSQL keeps).
CREATE TABLE projections (
    name       TEXT   PRIMARY KEY,
    generation BIGINT NOT NULL,
    checkpoint BIGINT NOT NULL,
    updated_at TEXT   NOT NULL
);
