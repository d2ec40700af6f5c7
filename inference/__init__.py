"""Registered models and their versions, jobs, their REST views, the Celery task and the FHE runtime."""
