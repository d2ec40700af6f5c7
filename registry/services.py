"""State changes of model versions: registration and retirement. Each writes its own audit record."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from django.core.files import File
from django.db import transaction
from django.db.models import Max

from base import audit, blobs, notify, rules
from base.audit import Actor
from registry.models import ModelVersion
from registry.preprocessing import check_feature_names, input_width
from registry.preprocessing import load as load_preprocessing
from registry.registration import measure_bundle


def register_model(
    name: str,
    folder: Path,
    description: str,
    actor: Actor,
    preprocessing: Path | None = None,
    feature_names: Sequence[str] | None = None,
) -> ModelVersion:
    """Register the FHEModelDev export in ``folder`` as the next version of ``name``.

    ``preprocessing`` is a skops file of the fitted transformer the data owner applies to
    raw rows before encrypting; ``feature_names`` name those rows' columns, in order.
    """
    name = rules.slug_name(name, "model")
    # The file is checked before the model is measured: refusing it costs no keygen.
    prep = load_preprocessing(preprocessing) if preprocessing is not None else None
    facts = measure_bundle(folder)
    names = check_feature_names(feature_names, prep, input_width(prep, facts.input_features))
    stored: list[str] = []
    try:
        with transaction.atomic():
            latest = ModelVersion.objects.select_for_update().filter(name=name).aggregate(v=Max("version"))["v"]
            version = (latest or 0) + 1
            # A unique suffix: blobs left by a registration that crashed never block the next one.
            prefix = f"models/{name}/v{version}-{uuid.uuid4().hex[:8]}"
            for part in ("client.zip", "server.zip"):
                with (folder / part).open("rb") as handle:
                    stored.append(blobs.save(f"{prefix}/{part}", File(handle)))
            if prep:
                # The bytes that were checked, not the file again: the digest is of what is served.
                stored.append(blobs.save_bytes(f"{prefix}/preprocessing.skops", prep.data))
            warmup_input = blobs.save_bytes(f"{prefix}/warmup.bin", facts.warmup_input) if facts.warmup_input else ""
            if warmup_input:
                stored.append(warmup_input)
            constant_keys = (
                blobs.save_bytes(f"{prefix}/constant-keys.bin", facts.constant_keys) if facts.constant_keys else ""
            )
            if constant_keys:
                stored.append(constant_keys)
            model = ModelVersion.objects.create(
                name=name,
                version=version,
                description=description,
                client_zip=stored[0],
                server_zip=stored[1],
                server_sha256=facts.server_sha256,
                evaluation_keys_bytes=facts.evaluation_keys_bytes,
                input_ciphertext_bytes=facts.input_ciphertext_bytes,
                output_ciphertext_bytes=facts.output_ciphertext_bytes,
                input_features=facts.input_features,
                evaluation_keys_constant=facts.evaluation_keys_constant,
                evaluation_keys_sha256=facts.evaluation_keys_sha256,
                preprocessing=stored[2] if prep else "",
                preprocessing_sha256=prep.sha256 if prep else "",
                feature_names=names,
                warmup_input=warmup_input,
                constant_keys=constant_keys,
                first_run_ms=facts.first_run_ms,
                warm_run_ms=facts.warm_run_ms,
            )
            audit.record(
                actor, "model.registered", "model", f"{name}:v{version}", server_sha256=facts.server_sha256,
                preprocessing_sha256=model.preprocessing_sha256 or None,
            )  # fmt: skip
    except BaseException:
        for name_ in stored:
            blobs.delete(name_)
        raise
    transaction.on_commit(partial(notify.announce_model, model.pk))
    return model


def retire_model(model: ModelVersion, actor: Actor, reason: str) -> bool:
    """Stop offering a model version to new sessions; open sessions keep running. False if already retired."""
    reason = rules.reason(reason)
    with transaction.atomic():
        updated = ModelVersion.objects.filter(pk=model.pk, status=ModelVersion.Status.ACTIVE).update(
            status=ModelVersion.Status.RETIRED
        )
        if updated:
            audit.record(actor, "model.retired", "model", f"{model.name}:v{model.version}", reason)
    model.refresh_from_db()
    return bool(updated)


def newest_active(name: str) -> ModelVersion | None:
    return ModelVersion.objects.filter(name=name, status=ModelVersion.Status.ACTIVE).order_by("-version").first()
