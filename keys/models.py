"""API clients and their API keys (stored hashed by djangorestframework-api-key)."""

from __future__ import annotations

from django.db import models
from rest_framework_api_key.models import AbstractAPIKey


class ApiClient(models.Model):
    """A tenant of the service. It sees only its own sessions and jobs."""

    name = models.SlugField(max_length=100, unique=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    keys_rotated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "API client"
        permissions = [("manage_apiclient", "Can disable, enable and rotate keys of API clients")]

    def __str__(self) -> str:
        return self.name


class ClientApiKey(AbstractAPIKey):
    """One API key of a client; only its hash is stored."""

    client = models.ForeignKey(ApiClient, on_delete=models.CASCADE, related_name="api_keys")

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "client API key"
