-- One row per projector: which generation of its tables is live, and the position of the last
-- event those tables reflect. Live batches lock this row, write, and move the checkpoint in one
-- transaction; `chatledger replay` builds the next generation and switches this row and the
-- projector's views in one transaction.
CREATE TABLE projections (
    name       TEXT   PRIMARY KEY,
    generation BIGINT NOT NULL,
    checkpoint BIGINT NOT NULL,
    updated_at TEXT   NOT NULL
);
