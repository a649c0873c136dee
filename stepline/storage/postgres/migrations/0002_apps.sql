-- Apps that serve functions over HTTP, as last synced.
CREATE TABLE apps (
    id        TEXT COLLATE "C" PRIMARY KEY,
    url       TEXT NOT NULL,
    framework TEXT,
    sdk       TEXT,
    checksum  TEXT,
    synced_at BIGINT NOT NULL,
    error     TEXT
);
