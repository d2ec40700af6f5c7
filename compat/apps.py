from django.apps import AppConfig


class CompatConfig(AppConfig):
    name = "compat"
    verbose_name = "Concrete-ML example-server compatibility"
    default_auto_field = "django.db.models.BigAutoField"
