"""URL map: the REST API under /api/v1, probes, metrics, schema and the admin."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from api.urls import api_v1
from dashboards import views as dashboard_views

urlpatterns = [
    path("api/v1/", include(api_v1)),
    path("compat/<str:token>/", include("compat.urls")),
    path("api/schema", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its start-up script from its own URL, not inline: the page's CSP forbids inline scripts.
    path("api/docs", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="docs"),
    path("healthz", dashboard_views.healthz),
    path("readyz", dashboard_views.readyz),
    path("metrics", dashboard_views.metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
]

handler400 = "base.errors.json_bad_request"
handler404 = "base.errors.json_not_found"
handler500 = "base.errors.json_server_error"
