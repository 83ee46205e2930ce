-- 5: the change log (objects.rev, tombstones) is PostgreSQL's, where other
-- replicas follow commits by it; a single SQLite controller has no
-- followers. Nothing to do: this file keeps the two dialects' version
-- numbers aligned.
SELECT 1;
