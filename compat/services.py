"""State changes of the compatibility layer. Each function writes its own audit record."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from django.db import transaction

from base import audit, rules
from base.audit import Actor
from compat import tokens
from compat.models import CompatToken, HybridModule
from keys.models import ApiClient
from registry.models import ModelVersion
from registry.registration import BundleError
from registry.services import newest_active, register_model, retire_model


@transaction.atomic
def issue_token(client: ApiClient, actor: Actor, reason: str) -> str:
    """Revoke the client's compatibility token, if any, and issue a new one; the raw token is returned once."""
    reason = rules.reason(reason)
    revoked = tokens.revoke_all(client)
    raw, prefix, sha256 = tokens.new_token()
    CompatToken.objects.create(client=client, prefix=prefix, token_sha256=sha256)
    audit.record(actor, "client.compat_token_issued", "client", client.name, reason, revoked=revoked, prefix=prefix)
    return raw


@transaction.atomic
def revoke_tokens(client: ApiClient, actor: Actor, reason: str) -> int:
    """Revoke every compatibility token of a client: its URLs answer 401 from the next request on."""
    reason = rules.reason(reason)
    revoked = tokens.revoke_all(client)
    audit.record(actor, "client.compat_token_revoked", "client", client.name, reason, revoked=revoked)
    return revoked


def shape_of(folder_name: str) -> str:
    """The input shape a hybrid client sends ("(1, 10)") for a folder Concrete-ML named ``po_1_10_pc``."""
    if not re.fullmatch(r"po_\d+(_\d+)*_pc", folder_name):
        raise BundleError(f"{folder_name!r} is not an input-shape folder (po_<dims>_pc)")
    dims = ast.literal_eval(folder_name.replace("po_", "(").replace("_pc", ",)").replace("_", ", "))
    return str(tuple(dims))


def version_name(model_name: str, module_name: str, shape_folder: str) -> str:
    """The registry name of one module and shape: a slug, as every model version's name is."""
    module = re.sub(r"[^A-Za-z0-9_-]", "-", module_name)
    return f"{model_name}--{module}--{shape_folder}"[:100]


def find_modules(folder: Path) -> list[tuple[str, str, Path]]:
    """(module name, input shape, FHEModelDev folder) for each module and shape in a
    ``save_and_clear_private_info`` folder."""
    found = [
        (module.name, shape_of(shape.name), shape)
        for module in sorted(folder.iterdir())
        if module.is_dir()
        for shape in sorted(module.iterdir())
        if shape.is_dir()
    ]
    if not found:
        raise BundleError(f"{folder} holds no <module>/<shape> folders: pass a save_and_clear_private_info folder")
    return found


def register_hybrid_model(name: str, folder: Path, description: str, actor: Actor) -> list[HybridModule]:
    """Register every module and input shape of a hybrid model as the next version of its own model name.

    All or none: one bundle that cannot be measured registers nothing.
    """
    modules = find_modules(folder)
    names = [version_name(name, module, shape.name) for module, _, shape in modules]
    if len(set(names)) != len(names):
        raise BundleError("two modules of this model map to the same registry name; rename one")
    registered: list[HybridModule] = []
    with transaction.atomic():
        for (module, shape, bundle), member in zip(modules, names, strict=True):
            register_model(member, bundle, description or f"{name}: module {module}, input {shape}", actor)
            row, _ = HybridModule.objects.update_or_create(
                model_name=name, module_name=module, input_shape=shape, defaults={"version_name": member}
            )
            registered.append(row)
        audit.record(actor, "hybrid_model.registered", "model", name, modules=len(registered))
    return registered


def retire_hybrid_model(name: str, actor: Actor, reason: str) -> int:
    """Retire the newest active version of every module of a hybrid model; how many were retired."""
    retired = 0
    with transaction.atomic():
        for row in HybridModule.objects.filter(model_name=name):
            model = newest_active(row.version_name)
            if model is not None:
                retired += retire_model(model, actor, reason)
        audit.record(actor, "hybrid_model.retired", "model", name, reason, retired=retired)
    return retired


def served_modules(name: str | None = None) -> dict[str, dict[str, dict[str, ModelVersion]]]:
    """model name -> module name -> input shape -> the model version serving it, for modules with an active version."""
    rows = HybridModule.objects.all() if name is None else HybridModule.objects.filter(model_name=name)
    active = {
        model.name: model
        for model in ModelVersion.objects.filter(
            name__in=[row.version_name for row in rows], status=ModelVersion.Status.ACTIVE
        ).order_by("name", "version")  # the newest last, so it wins
    }
    served: dict[str, dict[str, dict[str, ModelVersion]]] = {}
    for row in rows:
        if row.version_name in active:
            served.setdefault(row.model_name, {}).setdefault(row.module_name, {})[row.input_shape] = active[
                row.version_name
            ]
    return served
