"""Compatibility tokens, and hybrid models' modules mapped onto registered model versions."""

from __future__ import annotations

from django.db import models


class CompatToken(models.Model):
    """A client's credential for the example-server protocols, carried in the URL path.

    Only its SHA-256 is stored: the token is 256 random bits, so a fast hash is enough
    (no dictionary to attack), and the prefix finds the row without scanning.
    """

    client = models.ForeignKey("keys.ApiClient", on_delete=models.CASCADE, related_name="compat_tokens")
    prefix = models.CharField(max_length=16, unique=True)
    token_sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "compatibility token"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.client})"


class HybridModule(models.Model):
    """One module and input shape of a hybrid torch model, served by the model version ``version_name``.

    The rows of one ``model_name`` are what ``register_hybrid_model`` found in one
    ``save_and_clear_private_info`` folder; a new registration adds a version to each.
    """

    model_name = models.SlugField(max_length=60)
    module_name = models.CharField(max_length=200)
    # As the hybrid client sends it: str() of the tuple, e.g. "(1, 10)".
    input_shape = models.CharField(max_length=100)
    version_name = models.SlugField(max_length=100, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model_name", "module_name", "input_shape"]
        constraints = [
            models.UniqueConstraint(fields=["model_name", "module_name", "input_shape"], name="unique_hybrid_module")
        ]

    def __str__(self) -> str:
        return f"{self.model_name} {self.module_name} {self.input_shape}"
