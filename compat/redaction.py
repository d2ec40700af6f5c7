"""Keeping compatibility tokens out of logs. Free of Django: gunicorn's log configuration loads it.

Zama's example clients send no headers, so their credential is a path segment,
``/compat/<token>/...``, and anything that writes a URL down would keep it.
"""

from __future__ import annotations

import logging
import re

MARK = "moaic_"
# A token itself wherever it appears, and whatever stands in the token's place in a
# compat URL: a mistyped token is most likely a real one with a typo.
_TOKEN = re.compile(rf"{MARK}[A-Za-z0-9_-]+")
_IN_PATH = re.compile(r"(/compat/)[^/\s?#\"']+")
REDACTED = "[redacted]"


def redact(text: str) -> str:
    return _IN_PATH.sub(rf"\g<1>{REDACTED}", _TOKEN.sub(MARK + REDACTED, text))


class RedactTokens(logging.Filter):
    """Installed on every log handler (settings.LOGGING, gunicorn's logconfig): a record's
    message and its string fields (``path``, gunicorn's request line) lose their tokens."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if MARK in message or "/compat/" in message:
            record.msg, record.args = redact(message), None
        for name, value in list(vars(record).items()):
            if isinstance(value, str) and name != "msg" and (MARK in value or "/compat/" in value):
                setattr(record, name, redact(value))
        return True
