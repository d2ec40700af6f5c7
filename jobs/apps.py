from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The tasks, registered under their names in every process: jobs.services sends
        # run_job by name, and a process that never imported the task module would publish
        # it to the broker even where tasks run in place (CELERY_TASK_ALWAYS_EAGER, the tests).
        # The worker's signal handlers (pool-process start and end, heartbeats, metrics)
        # fire only in a Celery worker. Nothing FHE-related is imported by either.
        from jobs import tasks, worker  # noqa: F401
