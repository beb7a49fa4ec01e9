-- 004: what handlers asked of the ContextGPT API, per job. Calls are numbered
-- within an attempt; before a retry repeats call N of a job, hookd looks here:
-- a call that succeeded is not sent again, and one whose answer was lost
-- ("sending") is first looked for in the thread. No API key is ever stored.

CREATE TABLE hookd.api_actions (
    job_id       bigint      NOT NULL REFERENCES hookd.jobs (id),
    seq          integer     NOT NULL,
    action       text        NOT NULL,   -- send_message, escalate, update_thread
    status       text        NOT NULL CHECK (status IN ('sending', 'done', 'failed')),
    http_status  integer,
    detail       text,                   -- the platform's reason, one line
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    PRIMARY KEY (job_id, seq)
);

-- The autoreply handler's "once per thread" rules: one row per rule and
-- conversation that has had its answer.
CREATE TABLE hookd.autoreply_sent (
    route        text        NOT NULL,
    rule         integer     NOT NULL,
    chatbot_id   text        NOT NULL,
    thread_id    text        NOT NULL,
    event_id     bigint      NOT NULL,
    sent_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (route, rule, chatbot_id, thread_id)
);
