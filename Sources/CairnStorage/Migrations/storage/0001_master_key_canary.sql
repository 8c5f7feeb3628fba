-- name: master key canary
CREATE TABLE cairn_master_key (id INTEGER PRIMARY KEY, canary TEXT NOT NULL);
