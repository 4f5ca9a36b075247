"""ASGI middleware, one per module: request telemetry (ids, access log, metrics), the
Origin/Host and body-size guard, and the predict fast lane (pure ASGI, answering exactly as
the FastAPI predict routes do). May import serving/, auth/ and below; nothing imports it."""
