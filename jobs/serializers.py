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
    input_features = serializers.IntegerField(help_text="features of one encrypted sample, as the circuit takes it")
    created_at = serializers.DateTimeField()
    feature_names = serializers.ListField(
        child=serializers.CharField(),
        allow_null=True,
        help_text="the raw features a data owner sends, in order; null when the operator named none",
    )
    preprocessing = serializers.BooleanField(
        help_text="the data owner applies GET /models/{name}/preprocessing.skops to raw rows before encrypting"
    )
    preprocessing_sha256 = serializers.CharField(allow_null=True)


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
