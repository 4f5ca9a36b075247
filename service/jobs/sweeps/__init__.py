"""Hyperparameter sweeps: a parent of jobs. ``submit.py`` is what ``POST /v1/sweeps`` calls,
``space.py`` the search space, ``study.py`` the Optuna study (ask and tell, rebuilt from our
tables), ``controller.py`` what advances a sweep, ``events.py`` its live stream,
``plot.py`` its figure."""
