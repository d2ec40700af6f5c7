from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The worker's signal handlers (pool-process start and end, heartbeats, metrics);
        # they fire only in a Celery worker. Nothing FHE-related is imported by this.
        from jobs import worker  # noqa: F401
