-- Apps that serve functions over HTTP, as last synced.
CREATE TABLE apps (
    id        TEXT PRIMARY KEY,
    url       TEXT NOT NULL,
    framework TEXT,
    sdk       TEXT,
    checksum  TEXT,
    synced_at INTEGER NOT NULL,
    error     TEXT
);
