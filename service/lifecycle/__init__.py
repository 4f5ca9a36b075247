"""A model's life after training: evaluations on other datasets (evaluate.py, metrics.py,
figures.py), ONNX export (onnx_export.py; a tabular model's feature pipeline in
onnx_pipeline.py) and checkpoint import (checkpoints.py, checkpoint_pipeline.py).

It sits beside serving/: it may import serving, data, store, training and errors, never
FastAPI (the routes in api/ translate HTTP to these calls).
"""
