from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class DashboardsConfig(AppConfig):
    name = "dashboards"
    verbose_name = "Dashboards"


class MoaiAdminConfig(admin_apps.AdminConfig):
    """The Django admin, on a site that requires a second factor (dashboards.admin_site)."""

    default = False  # named explicitly in INSTALLED_APPS; "dashboards" itself is DashboardsConfig
    default_site = "dashboards.admin_site.MoaiAdminSite"
