-- The managers running on this database, each by the id it picked at start, with when it
-- was last seen: a function VM whose manager is no longer seen is left over and removed.
CREATE TABLE managers (
    id TEXT PRIMARY KEY,
    last_seen_at BIGINT NOT NULL
);
