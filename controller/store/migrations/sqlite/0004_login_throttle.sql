-- 4: login_throttle is PostgreSQL's (sign-in throttling shared by
-- replicas); a single SQLite controller keeps it in memory. Nothing to do:
-- this file keeps the two dialects' version numbers aligned.
SELECT 1;
