"""Small helpers shared by the tests."""

from __future__ import annotations

from typing import Any

from rest_framework.test import APIClient


def post_bytes(http: APIClient, url: str, body: bytes, **headers: str) -> Any:
    return http.generic("POST", url, body, content_type="application/octet-stream", **headers)


def error_code(response: Any) -> str:
    code: str = response.json()["error"]["code"]
    return code
