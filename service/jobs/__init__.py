"""What jobs are asked and what happens around them: submission (what ``POST /v1/jobs``
calls), limits, the status vocabulary (status.py, a leaf every layer and the client use),
cancel and trace, events and long-poll waiters. May import data/, training/, store/; never
FastAPI or Starlette."""
