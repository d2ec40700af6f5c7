"""Errors raised by the client library."""

from __future__ import annotations

from typing import Any


class MoaiError(Exception):
    """Base class of the client's errors."""


class MoaiApiError(MoaiError):
    """The service answered with an error; ``code`` is the contract's error code."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


class MoaiJobFailed(MoaiError):
    def __init__(self, job: dict[str, Any]) -> None:
        error = job.get("error") or {}
        super().__init__(
            f"job {job.get('job_id')} ended {job.get('status')}: {error.get('code')}: {error.get('message')}"
        )
        self.job = job
        self.code = error.get("code")


class MoaiTimeout(MoaiError):
    """A job did not finish within the time the caller allowed."""
