"""Datasets in: JSON and CSV bodies parsed to float32 arrays, checked (naming the row and
column at fault) and stored once by content (sha256). May import store/ and training/; never
FastAPI or Starlette."""
