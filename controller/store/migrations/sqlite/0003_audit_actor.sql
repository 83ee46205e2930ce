-- 3: who an admin action came from, beyond the actor's name: how the actor
-- authenticated (console session, API token id, OIDC subject, the bootstrap
-- admin-token) and the request's user agent.
ALTER TABLE audit ADD COLUMN actor_via TEXT NOT NULL DEFAULT '';
ALTER TABLE audit ADD COLUMN user_agent TEXT NOT NULL DEFAULT '';
