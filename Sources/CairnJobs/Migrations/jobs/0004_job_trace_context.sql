-- name: job trace context
ALTER TABLE jobs ADD COLUMN trace_context TEXT;
