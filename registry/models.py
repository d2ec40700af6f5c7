"""Registered model versions: the exports that sessions and jobs run."""

from __future__ import annotations

import hmac

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
    # Those constant keys themselves (blob name; "" where keys differ per keygen, and for
    # versions registered before): every pool process holds them warm from its start, so a
    # session with them has nothing to warm and its opening nothing to wait for (jobs.warmup).
    constant_keys = models.CharField(max_length=300, blank=True)
    # Registration's two runs with one fresh set of keys (ms; 0 for versions registered
    # before): the first decompresses the keys, the second is a warm run.
    first_run_ms = models.FloatField(default=0.0)
    warm_run_ms = models.FloatField(default=0.0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "-version"]
        permissions = [("retire_modelversion", "Can retire model versions")]
        constraints = [models.UniqueConstraint(fields=["name", "version"], name="unique_model_version")]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"

    def kept_constant_keys(self, fingerprint: str) -> bool:
        """Whether keys with this SHA-256 are the constant keys this version kept: the very
        bytes every keygen makes for it, which pool processes hold warm (jobs.warmup)."""
        digest = self.evaluation_keys_sha256
        return bool(self.constant_keys and digest and hmac.compare_digest(fingerprint, digest))

    @property
    def warms_keys_ahead(self) -> bool:
        """Whether a session's opening has every pool process run the warm-up input with its keys.

        Only where that run costs less than the decompression it moves off the first job:
        the iris tree's runs take 0.13 s and its keys' first use 1.0-1.6 s more, but a
        wine-xgb run takes 5.7 s where first use adds 1.4-2.4 s. There, warm-ups on every
        pool process would hold the opening twice a run (two side by side on two cores) or
        share the cores with the first job, which waits for its own process's warm-up
        (first jobs 1.8-1.9 times warm). Its first job decompresses the keys instead: 1.25
        times a warm one in the bench. Versions registered before this was measured warm as before.
        """
        if self.warm_run_ms <= 0:
            return True
        return self.warm_run_ms < self.first_run_ms - self.warm_run_ms
