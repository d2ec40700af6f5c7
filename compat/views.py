"""Zama's example-server protocols on MOAI's machinery, under ``/compat/<token>/``.

- ``deployment/<model>/``: the deployment server (``get_client``, ``add_key``, ``compute``) for one
  registered model;
- ``hybrid/``: the hybrid-model server that ``HybridFHEModel(..., server_remote_address=...)``
  calls in ``fhe="remote"`` mode, answering from the registry of hybrid models.

Paths, methods, field names and bodies are those servers'; errors are MOAI's JSON with a
4xx/5xx status, which both clients treat as failure (they test ``status_code == 200``).
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.http import FileResponse
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from api.lookup import active_session_or_error, client_actor
from api.models_views import model_or_404
from api.sessions import key_check_errors
from base.errors import ApiError
from base.uploads import Spooled
from compat import compute, services
from compat.authentication import CompatTokenAuthentication
from compat.inputs import form_fields, one_file
from jobs.ciphertexts import check_inputs
from keys.models import ApiClient
from registry.models import ModelVersion
from sessions import services as session_services
from sessions.models import KeySession


class CompatView(APIView):
    authentication_classes = [CompatTokenAuthentication]
    # Not part of the REST API's schema: these are other projects' protocols.
    schema = None


def _client_zip(model: ModelVersion) -> FileResponse:
    return FileResponse(default_storage.open(model.client_zip, "rb"), content_type="application/zip")


def _add_key(request: Request, model: ModelVersion, upload: Spooled) -> Response:
    client, actor = request.user, client_actor(request)
    assert isinstance(client, ApiClient)
    with key_check_errors():
        session_services.admit_upload(client, model, upload.size, actor)
        session = session_services.open_session(client, model, upload, actor)
    return Response({"uid": str(session.id)})


def _compute(request: Request, uid: str, model_name: str, upload: Spooled) -> FileResponse:
    """Run the ciphertext in the uid's session, which must be one of ``model_name``'s."""
    session = _session(request, uid)
    if session.model_version.name != model_name:
        raise ApiError(400, "uid_model_mismatch", "This uid's keys were uploaded for another model or module.")
    assert upload.path is not None  # compat inputs are always spooled to a local file (compat.inputs)
    check_inputs([upload.path], session.model_version, 1)
    return compute.compute(session, upload.path, client_actor(request))


def _session(request: Request, uid: str) -> KeySession:
    try:
        uuid.UUID(uid)
    except ValueError:
        raise ApiError(404, "context_not_found", "No such uid.") from None
    return active_session_or_error(request, uid)


class DeploymentClientView(CompatView):
    def get(self, request: Request, token: str, name: str) -> FileResponse:
        return _client_zip(model_or_404(name))


class DeploymentAddKeyView(CompatView):
    throttle_scope = "sessions"

    def post(self, request: Request, token: str, name: str) -> Response:
        model = model_or_404(name)
        with one_file(request._request, "key", model.evaluation_keys_bytes) as upload:
            return _add_key(request, model, upload)


class DeploymentComputeView(CompatView):
    throttle_scope = "jobs"

    def post(self, request: Request, token: str, name: str) -> FileResponse:
        model = model_or_404(name)
        with one_file(request._request, "model_input", model.input_ciphertext_bytes) as upload:
            (uid,) = form_fields(request._request, "uid")
            return _compute(request, uid, model.name, upload)


# The hybrid server: which registered model version serves (model, module, input shape).

SERVED = "model_name", "module_name", "input_shape"


def _listing(served: dict[str, dict[str, dict[str, ModelVersion]]]) -> dict[str, Any]:
    """The example server's nested listing (model -> module -> shape -> facts), without its server paths."""
    return {
        model: {
            module: {
                shape: {"model_name": model, "module_name": module, "shape": shape, "model_version": version.version}
                for shape, version in shapes.items()
            }
            for module, shapes in modules.items()
        }
        for model, modules in served.items()
    }


def _served(model_name: str, module_name: str | None = None, input_shape: str | None = None) -> Any:
    served = services.served_modules(model_name)
    if model_name not in served:
        raise ApiError(404, "model_not_found", f"No active hybrid model named {model_name!r}.")
    modules = served[model_name]
    if module_name is None:
        return modules
    if module_name not in modules:
        raise ApiError(404, "module_not_found", f"{model_name} has no module {module_name!r}.", modules=sorted(modules))
    if input_shape is None:
        return modules[module_name]
    if input_shape not in modules[module_name]:
        raise ApiError(
            404, "input_shape_not_found", f"{module_name} takes no input of shape {input_shape!r}.",
            input_shapes=sorted(modules[module_name]),
        )  # fmt: skip
    return modules[module_name][input_shape]


class HybridListModelsView(CompatView):
    def get(self, request: Request, token: str) -> Response:
        return Response(_listing(services.served_modules()))


class HybridListModulesView(CompatView):
    def get(self, request: Request, token: str) -> Response:
        (model_name,) = form_fields(request._request, "model_name")
        return Response(_listing({model_name: _served(model_name)})[model_name])


class HybridListShapesView(CompatView):
    def get(self, request: Request, token: str) -> Response:
        model_name, module_name = form_fields(request._request, "model_name", "module_name")
        shapes = _served(model_name, module_name)
        return Response(_listing({model_name: {module_name: shapes}})[model_name][module_name])


class HybridClientView(CompatView):
    def get(self, request: Request, token: str) -> FileResponse:
        return _client_zip(_served(*form_fields(request._request, *SERVED)))


class HybridAddKeyView(CompatView):
    throttle_scope = "sessions"

    def post(self, request: Request, token: str) -> Response:
        # Which model the key is for is in the same multipart body: the cap is the largest key accepted at all.
        with one_file(request._request, "key", settings.MOAI_MAX_KEY_BYTES) as upload:
            model = _served(*form_fields(request._request, *SERVED))
            return _add_key(request, model, upload)


class HybridComputeView(CompatView):
    throttle_scope = "jobs"

    def post(self, request: Request, token: str) -> FileResponse:
        with one_file(request._request, "model_input", settings.MOAI_MAX_CIPHERTEXT_BYTES) as upload:
            uid, *served = form_fields(request._request, "uid", *SERVED)
            return _compute(request, uid, _served(*served).name, upload)
