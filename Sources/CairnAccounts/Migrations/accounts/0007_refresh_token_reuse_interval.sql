-- name: refresh-token reuse interval
-- Random, set when the token is rotated: its successor is HMAC-SHA256(token, salt), so
-- the same successor can be given again within the reuse interval without storing it
-- (a database dump holds neither the token nor its successor).
ALTER TABLE refresh_tokens ADD COLUMN successor_salt TEXT;
