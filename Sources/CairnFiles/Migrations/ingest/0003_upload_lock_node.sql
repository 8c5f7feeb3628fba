-- name: upload_lock_node
-- The node holding an upload's lease (its `Database.instanceKey`): a dead node's lease is free at once.
ALTER TABLE uploads ADD COLUMN lock_node BIGINT NOT NULL DEFAULT 0;
