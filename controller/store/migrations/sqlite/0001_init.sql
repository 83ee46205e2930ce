-- 1: objects, revision, audit, events.
CREATE TABLE objects (
	kind    TEXT NOT NULL,
	id      TEXT NOT NULL,
	name    TEXT NOT NULL,
	data    TEXT NOT NULL,
	updated INTEGER NOT NULL,
	PRIMARY KEY (kind, id),
	UNIQUE (kind, name)
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta (key, value) VALUES ('revision', 0);
CREATE TABLE audit (
	id        INTEGER PRIMARY KEY AUTOINCREMENT,
	at        INTEGER NOT NULL,
	actor     TEXT NOT NULL,
	action    TEXT NOT NULL,
	kind      TEXT NOT NULL,
	object_id TEXT NOT NULL,
	name      TEXT NOT NULL,
	before    TEXT,
	after     TEXT
);
CREATE TABLE events (
	id   INTEGER PRIMARY KEY AUTOINCREMENT,
	at   INTEGER NOT NULL,
	data TEXT NOT NULL
);
