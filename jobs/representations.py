"""JSON shapes of models and jobs, as API.md gives them."""

from __future__ import annotations

from typing import Any

from jobs.models import Job
from registry.models import ModelVersion


def model_json(model: ModelVersion) -> dict[str, Any]:
    return {
        "name": model.name,
        "version": model.version,
        "description": model.description,
        "status": model.status,
        "input_ciphertext_bytes": model.input_ciphertext_bytes,
        "evaluation_keys_bytes": model.evaluation_keys_bytes,
        "output_ciphertext_bytes": model.output_ciphertext_bytes,
        "input_features": model.input_features,
        "created_at": model.created_at,
        # What the data owner sends: raw rows of these features, in this order, which its
        # client turns into the model's input with the preprocessing before encrypting.
        "feature_names": model.feature_names or None,
        "preprocessing": bool(model.preprocessing),
        "preprocessing_sha256": model.preprocessing_sha256 or None,
    }


def job_json(job: Job) -> dict[str, Any]:
    return {
        "job_id": str(job.id),
        "context_id": str(job.session_id),
        "model": job.model_version.name,
        "model_version": job.model_version.version,
        "status": job.status,
        "inputs": job.input_count,
        "attempts": job.attempts,
        "submitted_at": job.submitted_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "latency_ms": job.latency_ms,
        "error": {"code": job.error_code, "message": job.error_message} if job.error_code else None,
    }
