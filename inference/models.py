"""Registered model versions and inference jobs."""

from __future__ import annotations

import uuid

from django.db import models


class ModelVersion(models.Model):
    """One registered ``FHEModelDev`` export. The newest active version of a name serves new sessions."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        RETIRED = "retired"

    name = models.SlugField(max_length=100)
    version = models.PositiveIntegerField()
    description = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    client_zip = models.CharField(max_length=300)
    server_zip = models.CharField(max_length=300)
    server_sha256 = models.CharField(max_length=64)
    # Exact sizes measured at registration with a throwaway keygen: every keygen and
    # every input of a model serializes to the same size (DESIGN.md).
    evaluation_keys_bytes = models.PositiveBigIntegerField()
    input_ciphertext_bytes = models.PositiveBigIntegerField()
    output_ciphertext_bytes = models.PositiveBigIntegerField()
    input_features = models.PositiveIntegerField()
    # True when every keygen yields the same evaluation keys (no key material, e.g. a
    # linear model): a key rotation then cannot require "fresh" keys for this model.
    evaluation_keys_constant = models.BooleanField(default=False)
    # The SHA-256 of those constant keys ("" otherwise, or for versions registered before it
    # was kept): an upload with this digest is the keys every keygen makes, checked by Python
    # byte for byte through the digest, so it needs no checker process (keys.evaluation_keys).
    evaluation_keys_sha256 = models.CharField(max_length=64, blank=True)
    # What the data owner applies to raw rows before encrypting (a skops file, blob name;
    # "" for none), and the raw features' names in order ([] when not given).
    preprocessing = models.CharField(max_length=300, blank=True)
    preprocessing_sha256 = models.CharField(max_length=64, blank=True)
    feature_names = models.JSONField(default=list, blank=True)
    # A ciphertext of zeros under a key deleted at registration (blob name; "" for versions
    # registered before warm-ups): run once with each new session's keys to decompress them.
    warmup_input = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "-version"]
        permissions = [("retire_modelversion", "Can retire model versions")]
        constraints = [models.UniqueConstraint(fields=["name", "version"], name="unique_model_version")]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


class Job(models.Model):
    """One batch of ciphertexts run in one session. This row, not the broker, is the truth."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)
    # Not a column: set by services.claim_job to the jobs still queued when this one was
    # claimed (up to a bound), so the job can leave cores to the processes taking them.
    queued_behind = 0

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session = models.ForeignKey("key_sessions.KeySession", on_delete=models.CASCADE, related_name="jobs")
    client = models.ForeignKey("keys.ApiClient", on_delete=models.CASCADE, related_name="jobs")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="jobs")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    input_count = models.PositiveIntegerField()
    inputs_sha256 = models.CharField(max_length=64)
    # NULL, not "", means "no key": the uniqueness constraint below must ignore such jobs.
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    # Each claim is one attempt; the attempt number fences a worker that lost its
    # lease: its late writes go to its own attempt's files and its finish is refused.
    attempts = models.PositiveIntegerField(default=0)
    result_attempt = models.PositiveIntegerField(null=True, blank=True)
    # The broker message (Celery task id) whose pool process runs the current attempt:
    # a message is a turn to run the job that suits its process best, not always the
    # job it names (services.claim_job), and this is how its parent finds that job.
    claim_token = models.CharField(max_length=64, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    submitted_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    blobs_erased = models.BooleanField(default=False)

    class Meta:
        ordering = ["-submitted_at"]
        permissions = [("cancel_job", "Can cancel queued jobs")]
        constraints = [
            models.UniqueConstraint(
                fields=["client", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="unique_idempotency_key_per_client",
            )
        ]

    def __str__(self) -> str:
        return f"job {self.id} ({self.status})"

    @property
    def latency_ms(self) -> int | None:
        if self.finished_at is None:
            return None
        return int((self.finished_at - self.submitted_at).total_seconds() * 1000)

    def input_name(self, index: int) -> str:
        return f"jobs/{self.id}/input-{index:05d}.bin"

    def output_name(self, index: int, attempt: int | None = None) -> str:
        """Where attempt ``attempt`` (default: the one whose result counts) writes output ``index``."""
        chosen = attempt or self.result_attempt or self.attempts
        return f"jobs/{self.id}/attempt-{chosen}/output-{index:05d}.bin"
