-- name: a phone number on the profile, for SMS
-- E.164 (`+` and digits), checked by the application; NULL when the user gave none.
ALTER TABLE users ADD COLUMN phone TEXT;
