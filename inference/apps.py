from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "inference"
    verbose_name = "Models and jobs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from inference import checks  # noqa: F401  (registers the deploy checks)
