"""Compatibility tokens: made, hashed, looked up (redacted from logs by compat.redaction)."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from django.utils import timezone

from compat.models import CompatToken
from compat.redaction import MARK
from keys.models import ApiClient

PREFIX_CHARS = 8


def new_token() -> tuple[str, str, str]:
    """A fresh token: (raw token, its prefix, its SHA-256)."""
    prefix = secrets.token_hex(PREFIX_CHARS // 2)
    raw = f"{MARK}{prefix}_{secrets.token_urlsafe(32)}"
    return raw, prefix, digest(raw)


def digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def client_for(raw: str) -> ApiClient | None:
    """The client whose live token this is, or None."""
    if not raw.startswith(MARK) or len(raw) > 100:
        return None
    prefix = raw[len(MARK) : len(MARK) + PREFIX_CHARS]
    token = CompatToken.objects.select_related("client").filter(prefix=prefix, revoked_at__isnull=True).first()
    # Compared in constant time: the prefix is public in the admin, the rest must not leak by timing.
    if token is None or not hmac.compare_digest(token.token_sha256, digest(raw)):
        return None
    return token.client


def revoke_all(client: ApiClient) -> int:
    return CompatToken.objects.filter(client=client, revoked_at__isnull=True).update(revoked_at=timezone.now())
