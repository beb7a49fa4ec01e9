-- 005: running jobs by conversation. A claim also checks that no other job
-- of the same route and conversation is running under a live lease: the
-- order check alone (no earlier open job) let a job run beside a later one
-- of its conversation when two concurrent commits had given job ids in the
-- opposite order of the events'. The index holds running jobs only.

CREATE INDEX jobs_running_idx ON hookd.jobs (route, conversation)
    WHERE status = 'running';
