-- Schema v14: delivery attempts per subscription for the module view's error rate (samverka.events), and
-- an index for outbox retention. Two fixed windows of `Settings.event_error_window` seconds: the current
-- one (starting at `window_us`) and the one before it; the same UPDATE that records a POST's outcome
-- rolls them, so counting costs no extra statement. Error rate = failures / attempts over both.
ALTER TABLE event_subscription ADD COLUMN window_us INTEGER NOT NULL DEFAULT 0;
ALTER TABLE event_subscription ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE event_subscription ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE event_subscription ADD COLUMN prev_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE event_subscription ADD COLUMN prev_failures INTEGER NOT NULL DEFAULT 0;
CREATE INDEX event_notification_by_seq ON event_notification (seq);
