-- 5: what each revision changed, so that replicas follow a commit of
-- another replica by reading only its changes (Postgres.ChangesSince)
-- instead of reloading every object: the revision that last wrote each
-- object, and one tombstone per deleted object. Existing rows count as
-- written at the current revision, and the log starts there: a follower
-- older than that reloads in full once.
ALTER TABLE objects ADD COLUMN rev BIGINT NOT NULL DEFAULT 0;
UPDATE objects SET rev = (SELECT value FROM meta WHERE key = 'revision');
CREATE INDEX objects_rev ON objects (rev);
CREATE TABLE tombstones (
	kind TEXT COLLATE "C" NOT NULL,
	id   TEXT COLLATE "C" NOT NULL,
	rev  BIGINT NOT NULL,
	PRIMARY KEY (kind, id)
);
CREATE INDEX tombstones_rev ON tombstones (rev);
-- Changes before this revision are not (or no longer) kept: a follower
-- behind it must reload in full.
INSERT INTO meta (key, value) SELECT 'tombstones_from', value FROM meta WHERE key = 'revision';
