"""State changes of API clients. Each function writes its own audit record."""

from __future__ import annotations

from django.db import transaction

from keys.models import ApiClient, ClientApiKey
from ops import audit
from ops.audit import Actor


class ClientError(ValueError):
    """A client operation that cannot be done as asked (unknown or duplicate name)."""


@transaction.atomic
def create_client(name: str, actor: Actor) -> tuple[ApiClient, str]:
    """Create a client and its first API key; the raw key is returned once and never stored."""
    if ApiClient.objects.filter(name=name).exists():
        raise ClientError(f"a client named {name!r} already exists")
    client = ApiClient.objects.create(name=name)
    _, raw_key = ClientApiKey.objects.create_key(name=f"{name} key", client=client)
    audit.record(actor, "client.created", "client", client.name)
    return client, raw_key


def get_client(name: str) -> ApiClient:
    try:
        return ApiClient.objects.get(name=name)
    except ApiClient.DoesNotExist:
        raise ClientError(f"no client named {name!r}") from None
