from django.apps import AppConfig


class KeySessionsConfig(AppConfig):
    name = "sessions"
    label = "key_sessions"
    verbose_name = "Key sessions"
    default_auto_field = "django.db.models.BigAutoField"
