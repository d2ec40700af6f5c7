"""API keys in the admin. The API clients' admin, whose actions end sessions, is in actions/admin.py."""

from __future__ import annotations

from django.contrib import admin
from rest_framework_api_key.models import APIKey

from base.admin_actions import ReadOnlyAdmin
from keys.models import ClientApiKey

# djangorestframework-api-key registers its base APIKey model, which this service
# does not use (keys belong to clients: ClientApiKey); offering "Add" there would mislead.
if admin.site.is_registered(APIKey):
    admin.site.unregister(APIKey)


@admin.register(ClientApiKey)
class ClientApiKeyAdmin(ReadOnlyAdmin):
    list_display = ["prefix", "client", "created", "revoked", "expiry_date"]
    list_filter = ["revoked"]
    search_fields = ["prefix", "client__name"]
