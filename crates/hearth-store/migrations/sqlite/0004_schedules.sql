-- Asynchronous and scheduled invocations: an invocation is `queued` (with its event) until a
-- manager takes it (`running`), then `ok` or `error`. A schedule's run is claimed by moving
-- its `next_run_at` forward in the same transaction that queues the invocation, so across
-- managers and restarts each run happens once: never lost, never repeated.
ALTER TABLE invocations ADD COLUMN event TEXT;
ALTER TABLE invocations ADD COLUMN schedule_id TEXT;

CREATE TABLE schedules (
    id TEXT PRIMARY KEY,
    function_id TEXT NOT NULL REFERENCES functions(id) ON DELETE CASCADE,
    expr TEXT NOT NULL,
    event TEXT NOT NULL,
    next_run_at BIGINT NOT NULL,
    last_run_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX schedules_due ON schedules (next_run_at);
CREATE INDEX invocations_status ON invocations (status);
