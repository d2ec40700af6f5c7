from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "inference"
    verbose_name = "Models and jobs"
    default_auto_field = "django.db.models.BigAutoField"
