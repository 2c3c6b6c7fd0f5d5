-- Published versions of a function (immutable snapshots of its code and configuration) and
-- aliases that route to one version, or split traffic between versions by weight.
CREATE TABLE function_versions (
    function_id TEXT NOT NULL REFERENCES functions(id) ON DELETE CASCADE,
    version BIGINT NOT NULL,
    handler TEXT NOT NULL,
    mode TEXT NOT NULL,
    memory_mib BIGINT NOT NULL,
    timeout_s BIGINT NOT NULL,
    env TEXT NOT NULL,
    code TEXT NOT NULL,
    code_sha256 TEXT NOT NULL,
    code_size BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (function_id, version)
);

CREATE TABLE function_aliases (
    function_id TEXT NOT NULL REFERENCES functions(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    -- JSON: {"<version>": weight, …}
    routes TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (function_id, name)
);

-- Which version served an invocation (null: the unpublished latest).
ALTER TABLE invocations ADD COLUMN version BIGINT;
