-- Each function's configuration version: 1 when first synced, +1 whenever a sync changes it.
ALTER TABLE functions ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
