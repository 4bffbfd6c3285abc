-- The keys that seal each conversation's personal data (message text, names, raw payloads)
-- in the log. One per conversation stream; `chatledger forget` deletes a customer's rows,
-- and what those keys sealed can no longer be read (crypto-shredding). Rows are deleted,
-- never updated. Outside the log on purpose: the log never changes.
CREATE TABLE subject_keys (
    stream     TEXT PRIMARY KEY,
    key_id     TEXT NOT NULL UNIQUE,
    key        TEXT NOT NULL,
    created_at TEXT NOT NULL
);
