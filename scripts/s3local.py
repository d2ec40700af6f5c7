"""An S3 API server on loopback, for the tests and the benchmark's ``MOAI_BLOB_STORAGE=s3`` runs.

No object store runs on this project's machines, so the S3 side is moto's standalone
server (``moto[server]``, a development dependency): a real HTTP server speaking the
S3 REST API, which is what the Python ecosystem runs tests against. The service
reaches it exactly as it would reach a bucket in a cloud, through boto3 and
django-storages, over the network; nothing in the service is patched.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from scripts.stack import free_port

BUCKET = "moai-blobs"
# moto accepts any credentials; boto3 needs some to sign its requests.
ACCESS_KEY = "moai-test-access-key"
SECRET_KEY = "moai-test-secret-key"


class LocalS3:
    """moto's server on a spare loopback port, with one empty bucket."""

    def __init__(self, log: Path | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        """The service's configuration for this server."""
        return {
            "MOAI_BLOB_STORAGE": "s3",
            "MOAI_S3_BUCKET": BUCKET,
            "MOAI_S3_ENDPOINT_URL": self.url,
            "MOAI_S3_REGION": "us-east-1",
            "MOAI_S3_ADDRESSING_STYLE": "path",
            "MOAI_S3_ACCESS_KEY_ID": ACCESS_KEY,
            "MOAI_S3_SECRET_ACCESS_KEY": SECRET_KEY,
        }

    def start(self) -> LocalS3:
        out = self.log.open("ab") if self.log else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=2).close()
                break
            except (urllib.error.URLError, ConnectionError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto's S3 server did not start on {self.url}") from None
                time.sleep(0.2)
        self.client().create_bucket(Bucket=BUCKET)
        return self

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def __enter__(self) -> LocalS3:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
