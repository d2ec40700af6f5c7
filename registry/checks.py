"""``manage.py check --deploy``: blob storage that would keep erased data.

Ending a session deletes its objects, but a bucket with versioning on keeps every
deleted object as a noncurrent version: evaluation keys, ciphertexts and results
would outlive their erasure. So versioning must be off, or a lifecycle rule must
expire noncurrent versions within ``MOAI_S3_NONCURRENT_DAYS_MAX`` days.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks


@checks.register(checks.Tags.security, deploy=True)
def bucket_keeps_no_versions(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    if settings.MOAI_BLOB_STORAGE != "s3":
        return []
    from botocore.exceptions import BotoCoreError, ClientError

    from base import blobs

    try:
        problem = blobs.versioning_problem(settings.MOAI_S3_NONCURRENT_DAYS_MAX)
    except (BotoCoreError, ClientError) as exc:
        return [
            checks.Warning(
                f"The versioning of bucket {blobs.bucket_name()} could not be read: {exc}",
                hint="Allow s3:GetBucketVersioning and s3:GetLifecycleConfiguration, or check it by hand.",
                id="moai.W201",
            )
        ]
    if problem is None:
        return []
    return [
        checks.Warning(
            problem,
            hint=(
                "Suspend versioning on the bucket, or add a lifecycle rule with NoncurrentVersionExpiration "
                f"of at most {settings.MOAI_S3_NONCURRENT_DAYS_MAX} days (docs/runbook.md, Blob storage)."
            ),
            id="moai.W200",
        )
    ]
