"""REST views of the models clients may open sessions with: the list, one model, its client
bundle (client.zip) and its preprocessing file."""

from __future__ import annotations

from django.core.files.storage import default_storage
from django.http import FileResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from base.errors import ApiError
from base.schema import BINARY, errors
from jobs.representations import model_json
from jobs.serializers import ModelOut
from registry.models import ModelVersion
from registry.services import newest_active


def model_or_404(name: str) -> ModelVersion:
    """The newest active version of the model ``name``; 404 ``model_not_found`` otherwise (compat's views too)."""
    model = newest_active(name)
    if model is None:
        raise ApiError(404, "model_not_found", f"No active model named {name!r}.")
    return model


class ModelListView(APIView):
    @extend_schema(operation_id="list_models", responses={200: ModelOut(many=True), **errors()})
    def get(self, request: Request) -> Response:
        newest: dict[str, ModelVersion] = {}
        for model in ModelVersion.objects.filter(status=ModelVersion.Status.ACTIVE).order_by("name", "-version"):
            newest.setdefault(model.name, model)
        return Response([model_json(m) for m in newest.values()])


class ModelDetailView(APIView):
    @extend_schema(operation_id="get_model", responses={200: ModelOut, **errors(404)})
    def get(self, request: Request, name: str) -> Response:
        return Response(model_json(model_or_404(name)))


class ModelClientBundleView(APIView):
    @extend_schema(
        operation_id="get_client_bundle",
        responses={(200, "application/zip"): OpenApiResponse(BINARY), **errors(404)},
    )
    def get(self, request: Request, name: str) -> FileResponse:
        model = model_or_404(name)
        response = FileResponse(
            default_storage.open(model.client_zip, "rb"), content_type="application/zip", as_attachment=True
        )
        response["Content-Disposition"] = f'attachment; filename="{model.name}-v{model.version}-client.zip"'
        response["X-Moai-Model-Version"] = str(model.version)
        return response


class ModelPreprocessingView(APIView):
    @extend_schema(
        operation_id="get_preprocessing",
        description="The fitted scikit-learn transformer (a skops file) that turns a raw row into the model's input.",
        responses={(200, "application/octet-stream"): OpenApiResponse(BINARY), **errors(404)},
    )
    def get(self, request: Request, name: str) -> FileResponse:
        model = model_or_404(name)
        if not model.preprocessing:
            raise ApiError(
                404,
                "preprocessing_not_found",
                f"{model.name} v{model.version} has no preprocessing: rows are encrypted as they are.",
            )
        response = FileResponse(
            default_storage.open(model.preprocessing, "rb"), content_type="application/octet-stream", as_attachment=True
        )
        response["Content-Disposition"] = f'attachment; filename="{model.name}-v{model.version}-preprocessing.skops"'
        response["X-Moai-Model-Version"] = str(model.version)
        return response
