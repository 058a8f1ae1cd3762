-- Events written in the same transaction as the change they announce, and deleted
-- once published: a worker that dies between the two publishes them when it returns.
CREATE TABLE event_outbox (
    id bigserial PRIMARY KEY,
    account_id text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX event_outbox_account ON event_outbox (account_id, id);
