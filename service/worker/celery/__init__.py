"""The scale-out queue: the Celery app and publishing (app.py), the worker process and the
task body (tasks.py), the API side of the queue (queue.py), and the Redis registry of live
workers and the catalog counter (broker.py). Imports run one way: tasks -> app -> broker."""
