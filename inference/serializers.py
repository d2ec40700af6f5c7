"""Shapes of the JSON the model and job endpoints return (for the OpenAPI schema)."""

from __future__ import annotations

from rest_framework import serializers


class ModelOut(serializers.Serializer):
    name = serializers.CharField()
    version = serializers.IntegerField()
    description = serializers.CharField()
    status = serializers.ChoiceField(choices=["active", "retired"])
    input_ciphertext_bytes = serializers.IntegerField()
    evaluation_keys_bytes = serializers.IntegerField()
    output_ciphertext_bytes = serializers.IntegerField()
    input_features = serializers.IntegerField()
    created_at = serializers.DateTimeField()


class JobError(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class JobOut(serializers.Serializer):
    job_id = serializers.UUIDField()
    context_id = serializers.UUIDField()
    model = serializers.CharField()
    model_version = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["queued", "running", "succeeded", "failed", "cancelled"])
    inputs = serializers.IntegerField()
    attempts = serializers.IntegerField()
    submitted_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    latency_ms = serializers.IntegerField(allow_null=True)
    error = JobError(allow_null=True)


class BatchIn(serializers.Serializer):
    inputs = serializers.ListField(child=serializers.FileField(), help_text="one serialized ciphertext per file")
