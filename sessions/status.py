"""What a request or a job meets in a session that is no longer active: one mapping from the
session's status to the error code (API.md "Errors") and the HTTP status that answer it."""

from __future__ import annotations

from dataclasses import dataclass

from sessions.models import KeySession


@dataclass(frozen=True)
class Ended:
    code: str
    http_status: int
    message: str


ENDED: dict[str, Ended] = {
    KeySession.Status.EXPIRED: Ended(
        "context_expired", 410, "The session expired; its keys are erased. Open a new session."
    ),
    KeySession.Status.INVALIDATED: Ended(
        "context_invalidated", 410, "The session was ended; its keys are erased. Open a new session."
    ),
    KeySession.Status.SUSPENDED: Ended(
        "context_suspended", 409, "Jobs of this session aborted the runtime repeatedly; the operator must lift it."
    ),
}
HTTP_STATUS_OF_CODE = {ended.code: ended.http_status for ended in ENDED.values()}
