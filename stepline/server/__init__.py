"""The Stepline server: event ingest, app sync, signed dispatch to apps, the /v1 API."""
