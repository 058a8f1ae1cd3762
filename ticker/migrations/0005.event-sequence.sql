-- Each event about a token carries the next number of this counter, so a back end
-- can tell the order of a token's events and notice one it missed.
ALTER TABLE subscriptions ADD COLUMN event_seq bigint NOT NULL DEFAULT 0;
