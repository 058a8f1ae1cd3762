-- Every back end (client) that holds a subscription, with the mode it asked for. The
-- socket carries a token while any requester holds it, in the highest mode asked.
CREATE TABLE subscription_requesters (
    instrument_token bigint NOT NULL
        REFERENCES subscriptions (instrument_token) ON DELETE CASCADE,
    client_id text NOT NULL,
    requested_mode text NOT NULL CHECK (requested_mode IN ('ltp', 'quote', 'full')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instrument_token, client_id)
);

-- What was subscribed before requesters existed belongs to the default one.
INSERT INTO subscription_requesters (instrument_token, client_id, requested_mode)
SELECT instrument_token, 'default', requested_mode
FROM subscriptions WHERE status IN ('pending', 'active');
