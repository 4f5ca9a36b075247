"""HTTP only: app assembly's parts, typed dependencies, the error body, middleware/ (request
telemetry, the Origin/Host guard, the predict lane) and routes/ (one module per resource).
It may import every package below it; nothing imports ``service.api``."""
