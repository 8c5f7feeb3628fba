-- name: upload metadata as sent
-- The creation's `Upload-Metadata` header as the client sent it: tus 1.0.0 has HEAD answer it.
ALTER TABLE uploads ADD COLUMN metadata TEXT;
