-- name: a locale on the profile, for notification templates
-- A BCP 47 tag, checked by the application; NULL renders templates' default variant.
ALTER TABLE users ADD COLUMN locale TEXT;
