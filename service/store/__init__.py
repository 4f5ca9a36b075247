"""Metadata (SQLAlchemy) and artifacts (files) stores. Nothing here imports FastAPI."""
