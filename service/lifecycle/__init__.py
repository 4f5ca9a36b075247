"""A model's life after training: evaluations on other datasets (evaluate.py, metrics.py,
figures.py), ONNX export (onnx_export.py) and checkpoint import (checkpoint_import.py).

It sits beside serving/: it may import serving, data, store, training and errors, never
FastAPI (the routes in api/ translate HTTP to these calls).
"""
