-- Events a read model could not apply (ADR 10): the position, the read model and the
-- generation of its tables, and why. The projector went on past them; readiness reports them
-- as `degraded`, and `chatledger quarantine retry` applies them again after a fix.
CREATE TABLE quarantine (
    read_model     TEXT   NOT NULL,
    generation     BIGINT NOT NULL,
    position       BIGINT NOT NULL,
    stream         TEXT   NOT NULL,
    event_type     TEXT   NOT NULL,
    error          TEXT   NOT NULL,
    quarantined_at TEXT   NOT NULL,
    PRIMARY KEY (read_model, generation, position)
);
