from django.apps import AppConfig


class BaseConfig(AppConfig):
    """The base layer. Its label stays ``ops`` (its name before the apps were layered), so its
    migrations, the audit table ``ops_auditrecord`` and the ``ops.*`` permissions are unchanged."""

    name = "base"
    label = "ops"
    verbose_name = "Operations and audit"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from base import schema  # noqa: F401  (registers the API key scheme with drf-spectacular)
        from base.folders import create_data_folders

        create_data_folders()
