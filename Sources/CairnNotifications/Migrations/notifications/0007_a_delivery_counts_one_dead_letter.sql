-- name: a delivery counts one dead letter
-- When the delivery first counted as a dead letter of its webhook endpoint; a
-- redelivery failing again does not count another.
ALTER TABLE notification_deliveries ADD COLUMN dead_lettered_at BIGINT;
