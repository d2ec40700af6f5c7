from django.apps import AppConfig


class ActionsConfig(AppConfig):
    """Installed for its admin, management commands and Celery task (autodiscovered); it has no models."""

    name = "actions"
    verbose_name = "Operator actions"
