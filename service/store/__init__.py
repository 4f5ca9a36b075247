"""Metadata (SQLAlchemy 2, migrated with Alembic; SQLite or PostgreSQL), artifacts (a
directory or an S3 bucket), API keys and Idempotency-Key reservations. The lowest layer: it
imports only errors.py, config.py and jobs/status.py; never FastAPI or Starlette."""
