"""Training, with no web framework and no database: the spec types, ``fit`` (split,
standardize, build the registered model, train), the engines (closed form, fused step,
autograd loop) and the rule that picks one, early stopping, the trace, devices. May import
models/ and errors.py only; the worker feeds it arrays and callbacks."""
