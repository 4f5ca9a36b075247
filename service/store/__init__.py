"""Metadata (SQLAlchemy, migrated with Alembic) and artifacts (a directory or an S3
bucket). Nothing here imports FastAPI."""
