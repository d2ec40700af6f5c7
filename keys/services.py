"""State changes of API clients. Each function writes its own audit record."""

from __future__ import annotations

from django.db import transaction

from base import audit, rules
from base.audit import Actor
from keys.models import ApiClient, ClientApiKey


class ClientError(rules.RuleError):
    """A client operation that cannot be done as asked (unknown or duplicate name)."""


@transaction.atomic
def create_client(name: str, actor: Actor) -> tuple[ApiClient, str]:
    """Create a client and its first API key; the raw key is returned once and never stored."""
    rules.slug_name(name, "client")
    if ApiClient.objects.filter(name=name).exists():
        raise ClientError(f"a client named {name!r} already exists")
    client = ApiClient.objects.create(name=name)
    _, raw_key = ClientApiKey.objects.create_key(name=f"{name} key", client=client)
    audit.record(actor, "client.created", "client", client.name)
    return client, raw_key


@transaction.atomic
def rotate_api_key(client: ApiClient, actor: Actor, reason: str) -> str:
    """Revoke every API key of a client and issue a new one; the raw key is returned once.

    The old keys answer 401 from the next request on: authentication looks keys up on
    every request and skips revoked ones (keys/authentication.py), nothing caches them.
    Sessions stay open: the evaluation keys are the data owner's, not the API key's
    (``rotate_client_keys`` ends sessions).
    """
    reason = rules.reason(reason)
    revoked = ClientApiKey.objects.filter(client=client, revoked=False).update(revoked=True)
    api_key, raw_key = ClientApiKey.objects.create_key(name=f"{client.name} key", client=client)
    audit.record(
        actor, "client.api_key_rotated", "client", client.name, reason, revoked_keys=revoked, new_prefix=api_key.prefix
    )
    return raw_key


def get_client(name: str) -> ApiClient:
    try:
        return ApiClient.objects.get(name=name)
    except ApiClient.DoesNotExist:
        raise ClientError(f"no client named {name!r}") from None
