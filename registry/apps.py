from django.apps import AppConfig


class RegistryConfig(AppConfig):
    """The model registry. Its label stays ``inference``, the app it was split from, so its
    migrations, the table ``inference_modelversion`` and the ``inference.*`` permissions stay."""

    name = "registry"
    label = "inference"
    verbose_name = "Models"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from registry import checks  # noqa: F401  (registers the deploy checks)
