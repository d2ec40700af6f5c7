from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class OpsConfig(AppConfig):
    name = "ops"
    verbose_name = "Operations and audit"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from moai_site.folders import create_data_folders
        from ops import schema  # noqa: F401  (registers the API key scheme with drf-spectacular)

        create_data_folders()


class MoaiAdminConfig(admin_apps.AdminConfig):
    """The Django admin, on a site that requires a second factor (ops.admin_site)."""

    default = False  # named explicitly in INSTALLED_APPS; "ops" itself is OpsConfig
    default_site = "ops.admin_site.MoaiAdminSite"
