-- name: upload parts
-- Unfinished uploads' bytes live in the blob store: their multipart upload (`multipart_id`) and
-- `store_parts`, the parts as JSON, written with the offset in one statement.
ALTER TABLE uploads ADD COLUMN multipart_id TEXT;
ALTER TABLE uploads ADD COLUMN store_parts TEXT NOT NULL DEFAULT '[]';
