"""Job queue backends and the one job function they all call, ``run_job(job)`` (runner.py):
the embedded pool of local processes (local.py), the reaper that requeues jobs of dead
workers, and celery/ for the scale-out mode. May import training/, store/ and below."""
