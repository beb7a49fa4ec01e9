-- 001: the inbox. Every verified delivery is one row of hookd.events, stored
-- before hookd answers 200. Deliveries that were genuine (verified) but not
-- a usable event go to hookd.quarantine instead of being thrown away.

CREATE TABLE hookd.events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- "id:<endpoint>:<delivery id>" when the sender gives a delivery id,
    -- else "sha256:<hex digest of the raw body>". Redeliveries collide here.
    dedup_key    text        NOT NULL UNIQUE,
    event_type   text        NOT NULL,
    chatbot_id   text,
    thread_id    text,
    raw_body     text        NOT NULL,   -- byte-exact as received (UTF-8)
    payload      jsonb       NOT NULL,
    scheme       text        NOT NULL,   -- what was verified
    endpoint     text        NOT NULL,
    delivery_id  text,
    remote_addr  inet,
    received_at  timestamptz NOT NULL DEFAULT now()
);

-- A conversation's timeline, per type and over time: what dispatch and the
-- CLI query.
CREATE INDEX events_thread_idx ON hookd.events (chatbot_id, thread_id, id);
CREATE INDEX events_type_idx ON hookd.events (event_type, received_at);
CREATE INDEX events_received_idx ON hookd.events (received_at);

CREATE TABLE hookd.quarantine (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint     text        NOT NULL,
    reason       text        NOT NULL,
    raw_body     bytea       NOT NULL,   -- may be invalid UTF-8, so bytes
    content_type text,
    scheme       text        NOT NULL,
    remote_addr  inet,
    received_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX quarantine_received_idx ON hookd.quarantine (received_at);
