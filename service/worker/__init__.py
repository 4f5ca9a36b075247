"""Job queue backends and the one job function, ``run_job``, they all call."""
