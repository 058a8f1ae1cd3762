-- An account whose access token Kite refused hands its subscriptions to others:
-- moved_from names the account a subscription left until its new socket carries it,
-- and status_reason says why a subscription is waiting when it could not move.
ALTER TABLE subscriptions ADD COLUMN moved_from text;
ALTER TABLE subscriptions ADD COLUMN status_reason text;
