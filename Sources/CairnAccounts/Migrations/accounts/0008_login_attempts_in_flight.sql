-- name: login attempts in flight
-- When the password of an admitted login attempt was found wrong (epoch ms). NULL while it is
-- being checked: a burst of logins may be refused for attempts still in flight, and is then
-- told to retry in a second rather than after the whole window (a correct one clears them).
ALTER TABLE login_failures ADD COLUMN settled_at BIGINT;
