-- 4: sign-in throttling shared by every replica (controller/lockout.go):
-- one row per throttle key ("pair:<account>|<ip>", "ip:<ip>",
-- "acct:<account>", "dev:..."), its failure count, the time before which
-- attempts wait, and the last failure (rows older than the throttle's
-- memory are ignored and swept).
CREATE TABLE login_throttle (
    key   TEXT PRIMARY KEY,
    fails INTEGER NOT NULL,
    until BIGINT NOT NULL, -- unix ms
    last  BIGINT NOT NULL  -- unix ms
);
CREATE INDEX login_throttle_last ON login_throttle (last);
