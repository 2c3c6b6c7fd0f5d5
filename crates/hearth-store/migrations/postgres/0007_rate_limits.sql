-- Invocations per second a function accepts (0: no limit).
ALTER TABLE functions ADD COLUMN rate_limit_per_s BIGINT NOT NULL DEFAULT 0;
