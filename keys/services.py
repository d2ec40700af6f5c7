"""State changes of API clients. Each function writes its own audit record."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import transaction
from django.utils import timezone

from base import audit, rules
from base.audit import Actor
from keys.evaluation_keys import NEAR_DUPLICATE_SHARE, shared_share
from keys.models import ApiClient, ClientApiKey

if TYPE_CHECKING:
    from registry.models import ModelVersion


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


def rotate_client_keys(client: ApiClient, actor: Actor, reason: str) -> int:
    """End all of a client's sessions and refuse the evaluation keys they used: the next session needs new keys.

    Returns how many sessions were ended. Rotating again is harmless.
    """
    from sessions.models import KeySession
    from sessions.services import end_sessions

    reason = rules.reason(reason)
    with transaction.atomic():
        ApiClient.objects.filter(pk=client.pk).update(keys_rotated_at=timezone.now())
        ended = end_sessions(client.sessions.all(), KeySession.Status.INVALIDATED, actor, f"keys rotated: {reason}")
        audit.record(actor, "client.keys_rotated", "client", client.name, reason, sessions_ended=ended)
    client.refresh_from_db()
    return ended


def set_client_active(client: ApiClient, active: bool, actor: Actor, reason: str) -> bool:
    """Enable or disable a client; disabling also ends its sessions. False when nothing changed."""
    from sessions.models import KeySession
    from sessions.services import end_sessions

    reason = rules.reason(reason)
    with transaction.atomic():
        changed = ApiClient.objects.filter(pk=client.pk, is_active=not active).update(is_active=active)
        ended = 0
        if not active:
            ended = end_sessions(
                client.sessions.all(), KeySession.Status.INVALIDATED, actor, f"client disabled: {reason}"
            )
        # Recorded even when the client already was in that state: the operator's action happened.
        audit.record(
            actor, "client.enabled" if active else "client.disabled", "client", client.name, reason,
            changed=bool(changed), sessions_ended=ended,
        )  # fmt: skip
    client.refresh_from_db()
    return bool(changed)


def keys_were_revoked(client: ApiClient, model_version: ModelVersion, fingerprint: str, chunks: bytes) -> bool:
    """True for evaluation keys a session of this client used before its keys were rotated, or a near copy.

    A near copy (NEAR_DUPLICATE_SHARE of its chunks in place) is refused too: with a bit
    flipped the bytes hash differently, but the keys still belong to the old secret key.
    """
    if client.keys_rotated_at is None:
        return False
    revoked = client.sessions.filter(created_at__lt=client.keys_rotated_at)
    if revoked.filter(key_fingerprint=fingerprint).exists():
        return True
    same_model = revoked.filter(model_version=model_version).exclude(key_chunks=b"")
    return any(
        shared_share(chunks, bytes(old)) >= NEAR_DUPLICATE_SHARE
        for old in same_model.values_list("key_chunks", flat=True).iterator()
    )
