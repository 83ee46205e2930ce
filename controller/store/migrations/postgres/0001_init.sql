-- 1: objects, revision, audit, events; the same model as SQLite's 0001.
-- Keys compare byte-wise (COLLATE "C") as in SQLite, whatever the database's
-- locale, so ordering and paging agree between the backends. JSON is kept as
-- TEXT so that stored bytes come back unchanged.
CREATE TABLE objects (
	kind    TEXT COLLATE "C" NOT NULL,
	id      TEXT COLLATE "C" NOT NULL,
	name    TEXT COLLATE "C" NOT NULL,
	data    TEXT NOT NULL,
	updated BIGINT NOT NULL,
	PRIMARY KEY (kind, id),
	UNIQUE (kind, name)
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
INSERT INTO meta (key, value) VALUES ('revision', 0);
CREATE TABLE audit (
	id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	at        BIGINT NOT NULL,
	actor     TEXT NOT NULL,
	action    TEXT NOT NULL,
	kind      TEXT NOT NULL,
	object_id TEXT NOT NULL,
	name      TEXT NOT NULL,
	before    TEXT,
	after     TEXT
);
CREATE TABLE events (
	id   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	at   BIGINT NOT NULL,
	data TEXT NOT NULL
);
-- Shared by replicas only: who heartbeated last (any replica), and the
-- deployment identity every replica must match (hashes, never secrets).
CREATE TABLE presence (
	kind TEXT COLLATE "C" NOT NULL,
	id   TEXT COLLATE "C" NOT NULL,
	seen BIGINT NOT NULL,
	data TEXT,
	PRIMARY KEY (kind, id)
);
CREATE TABLE deployment (key TEXT PRIMARY KEY, value TEXT NOT NULL);
