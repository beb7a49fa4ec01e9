-- 003: human handoff tickets. The handoff handler opens one ticket per
-- conversation when a visitor asks for a human; a repeated escalation adds
-- to the open ticket. Every step is kept in handoff_log.

CREATE TABLE hookd.handoff_tickets (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    chatbot_id       text        NOT NULL,
    thread_id        text        NOT NULL,
    status           text        NOT NULL DEFAULT 'open'
                     CHECK (status IN ('open', 'claimed', 'closed')),
    agent            text,
    contact_name     text,
    contact_email    text,
    contact_phone    text,
    last_prompt      text,                  -- what the visitor wrote when escalating
    escalations      integer     NOT NULL DEFAULT 1,
    event_ids        bigint[]    NOT NULL DEFAULT '{}',
    notified_ids     bigint[]    NOT NULL DEFAULT '{}',  -- events whose notice went out
    opened_at        timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    claimed_at       timestamptz,
    closed_at        timestamptz
);

-- At most one ticket per conversation that is not closed.
CREATE UNIQUE INDEX handoff_one_open_idx ON hookd.handoff_tickets (chatbot_id, thread_id)
    WHERE status <> 'closed';
CREATE INDEX handoff_status_idx ON hookd.handoff_tickets (status, opened_at);

CREATE TABLE hookd.handoff_log (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ticket_id  bigint      NOT NULL REFERENCES hookd.handoff_tickets (id),
    at         timestamptz NOT NULL DEFAULT now(),
    action     text        NOT NULL,     -- opened, escalated, notified, claimed, closed
    detail     text
);

CREATE INDEX handoff_log_ticket_idx ON hookd.handoff_log (ticket_id, id);
