"""Shapes of the JSON the session endpoints return (for the OpenAPI schema)."""

from __future__ import annotations

from rest_framework import serializers


class SessionOut(serializers.Serializer):
    context_id = serializers.UUIDField()
    model = serializers.CharField()
    model_version = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["active", "expired", "invalidated"])
    key_fingerprint = serializers.CharField()
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    ended_at = serializers.DateTimeField(allow_null=True)
    ttl_seconds = serializers.IntegerField()
    keys_warm = serializers.BooleanField(
        required=False,
        help_text="on opening only: the keys were ready for a job before the answer (a worker had "
        "decompressed them, or they hold nothing to decompress)",
    )


class SessionJob(serializers.Serializer):
    job_id = serializers.UUIDField()
    status = serializers.CharField()
    submitted_at = serializers.DateTimeField()


class SessionDetailOut(SessionOut):
    jobs = SessionJob(many=True)
