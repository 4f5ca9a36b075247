"""Alembic migrations of the metadata store (see README.md beside this file)."""
