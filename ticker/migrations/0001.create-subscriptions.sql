-- One row per instrument token: what back ends asked for (requested_mode, status,
-- version) and what the account's worker has applied to its socket (applied_mode).
CREATE TABLE subscriptions (
    instrument_token bigint PRIMARY KEY CHECK (instrument_token BETWEEN 1 AND 4294967295),
    tradingsymbol text NOT NULL,
    exchange text NOT NULL,
    segment text NOT NULL,
    account_id text NOT NULL,
    requested_mode text NOT NULL CHECK (requested_mode IN ('ltp', 'quote', 'full')),
    applied_mode text CHECK (applied_mode IN ('ltp', 'quote', 'full')),
    status text NOT NULL CHECK (status IN ('pending', 'active', 'removing', 'removed')),
    -- Bumped by every accepted request, so a task only settles the status it was
    -- sent for and never the one of a newer request queued behind it.
    version integer NOT NULL DEFAULT 1,
    task_id text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX subscriptions_account_status ON subscriptions (account_id, status);
