"""What happens to a job before and around training: submission (what ``POST /v1/jobs``
calls), limits, idempotency, the status vocabulary, events and long-poll waiters.
May import training/, data/, store/; never FastAPI or Starlette."""
