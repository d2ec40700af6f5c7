"""The HTTP layer: authentication, error decoding and streamed uploads with progress."""

from __future__ import annotations

import io
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from tqdm import tqdm
from urllib3.util.retry import Retry

from moai_client.errors import MoaiApiError


class _ProgressReader(io.BytesIO):
    """Bytes sent as a sized body (not chunked), advancing a progress bar as they are read."""

    def __init__(self, data: bytes, bar: tqdm) -> None:
        super().__init__(data)
        self._bar = bar

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self._bar.update(len(chunk))
        return chunk


# The server closes a keep-alive connection that sat idle (gunicorn after 2 s); a request sent
# on it as it closes fails with "Remote end closed connection without response". A request that
# changes nothing or is safe to repeat (GET, PUT, DELETE, HEAD, OPTIONS) is then sent once more,
# on a new connection. POSTs are not resent here: whether the first one arrived is unknown, and
# job submissions carry an Idempotency-Key for callers that retry them.
STALE_CONNECTION_RETRY = Retry(total=1, connect=1, read=1, status=0, other=0, redirect=0, backoff_factor=0)


class Http:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 60.0,
        verify: bool | str = True,
        cert: tuple[str, str] | None = None,
        progress: bool = True,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.progress = progress
        self.session = requests.Session()
        adapter = HTTPAdapter(max_retries=STALE_CONNECTION_RETRY)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["Authorization"] = f"Bearer {api_key}"
        self.session.headers["User-Agent"] = "moai-client/1.0"
        self.session.verify = verify
        if cert is not None:
            # mTLS deployments ask for the client's certificate and key.
            self.session.cert = cert

    def url(self, path: str) -> str:
        return f"{self.base_url}/api/v1/{path.lstrip('/')}"

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        response = self.session.request(method, self.url(path), **kwargs)
        if response.status_code >= 400:
            raise _api_error(response)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    def upload(self, path: str, data: bytes, label: str, headers: dict[str, str] | None = None) -> Any:
        with tqdm(
            total=len(data), unit="B", unit_scale=True, desc=label, disable=not self.progress, leave=False
        ) as bar:
            body = _ProgressReader(data, bar)
            all_headers = {"Content-Type": "application/octet-stream", **(headers or {})}
            return self.json("POST", path, data=body, headers=all_headers)


def _api_error(response: requests.Response) -> MoaiApiError:
    try:
        error = response.json()["error"]
        details = {k: v for k, v in error.items() if k not in ("code", "message")}
        return MoaiApiError(response.status_code, str(error["code"]), str(error["message"]), details)
    except (ValueError, KeyError, TypeError):
        return MoaiApiError(response.status_code, "http_error", response.text[:200])
