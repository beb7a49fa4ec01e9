-- 002: the job queue. Each stored event gets one job per matching route, in
-- the same statement (so the same commit) as the event itself. Workers claim
-- jobs with FOR UPDATE SKIP LOCKED; a job runs only when no earlier job of
-- the same route and conversation is still pending or running, which keeps
-- each conversation in order while different conversations run in parallel.

CREATE TABLE hookd.jobs (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     bigint      NOT NULL REFERENCES hookd.events (id),
    route        text        NOT NULL,
    -- "<chatbot id>/<thread id>", or "event/<event id>" when the event has
    -- no thread: the unit of ordering.
    conversation text        NOT NULL,
    status       text        NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'running', 'done', 'dead')),
    attempts     integer     NOT NULL DEFAULT 0,
    run_at       timestamptz NOT NULL DEFAULT now(),
    lease_until  timestamptz,            -- while running: reclaimable after
    locked_by    text,                   -- "<host>:<pid>" of the worker
    last_error   text,
    output       text,
    replayed_at  timestamptz,            -- set when a dead job was requeued
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    UNIQUE (event_id, route)
);

-- What workers look for: runnable jobs in time order.
CREATE INDEX jobs_runnable_idx ON hookd.jobs (run_at, id)
    WHERE status IN ('pending', 'running');
-- The ordering check: earlier open jobs of the same conversation and route.
CREATE INDEX jobs_conversation_idx ON hookd.jobs (route, conversation, id)
    WHERE status IN ('pending', 'running');
-- Listing by state and route, and an event's jobs.
CREATE INDEX jobs_status_idx ON hookd.jobs (status, route);
CREATE INDEX jobs_event_idx ON hookd.jobs (event_id);
