-- Each reactor's view of the log as it stood at a position (ADR 14): a process starts its
-- reactors from the last one and folds only what came after, not the whole log. Any process
-- may write one; the furthest wins. `format` is the view's shape: a release that changes it
-- ignores older snapshots and folds the log once.
CREATE TABLE reactor_snapshots (
    reactor  TEXT   NOT NULL PRIMARY KEY,
    format   BIGINT NOT NULL,
    position BIGINT NOT NULL,
    view     TEXT   NOT NULL,
    taken_at TEXT   NOT NULL
);
