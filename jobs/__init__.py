"""Jobs, above sessions: the ``Job`` model, submission, claim/finish/fail/cancel, the Celery
task, the FHE runtime, the worker, recovery, waits, key warm-ups, and ending sessions
together with their jobs (``ending.py``). The REST views of models and jobs are in api."""
