"""Inference jobs: one batch of ciphertexts run in one session."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from django.db import models

from registry.models import ModelVersion

if TYPE_CHECKING:
    from base.notify import Outputs


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
    # Not a column either: the outputs the job-end notice carried to a request waiting on it
    # (jobs.waits.hold_until_ended), answered from memory instead of read back from storage.
    delivered_outputs: Outputs | None = None
    # The same outputs once checked servable against the row (jobs.waits): not checked twice.
    confirmed_outputs: Outputs | None = None

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
        # The table keeps the name it had when jobs lived in the app labelled "inference"
        # (migration jobs.0001 moved the model without touching the table).
        db_table = "inference_job"
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

    @property
    def blob_folder(self) -> str:
        """Where every input and output of the job is stored."""
        return f"jobs/{self.id}"

    def input_name(self, index: int) -> str:
        return f"{self.blob_folder}/input-{index:05d}.bin"

    def output_name(self, index: int, attempt: int | None = None) -> str:
        """Where attempt ``attempt`` (default: the one whose result counts) writes output ``index``."""
        chosen = attempt or self.result_attempt or self.attempts
        return f"{self.blob_folder}/attempt-{chosen}/output-{index:05d}.bin"
