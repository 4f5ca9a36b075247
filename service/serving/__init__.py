"""Serving fitted models: the predictor (checkpoints loaded once, verified, answered from
memory; torch only for kinds without the numpy path), the predict core shared by /predict and
the fast lane, the Open Inference Protocol core, plots. May import training/ (the spec and
scaling), data/, store/; never FastAPI or Starlette."""
