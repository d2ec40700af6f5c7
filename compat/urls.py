"""``/compat/<token>/``: the base URLs Concrete-ML's example clients are given instead of their server's."""

from __future__ import annotations

from django.urls import path

from compat import views

urlpatterns = [
    path("deployment/<str:name>/get_client", views.DeploymentClientView.as_view(), name="compat-deployment-client"),
    path("deployment/<str:name>/add_key", views.DeploymentAddKeyView.as_view(), name="compat-deployment-add-key"),
    path("deployment/<str:name>/compute", views.DeploymentComputeView.as_view(), name="compat-deployment-compute"),
    path("hybrid/list_models", views.HybridListModelsView.as_view(), name="compat-hybrid-list-models"),
    path("hybrid/list_modules", views.HybridListModulesView.as_view(), name="compat-hybrid-list-modules"),
    path("hybrid/list_shapes", views.HybridListShapesView.as_view(), name="compat-hybrid-list-shapes"),
    path("hybrid/get_client", views.HybridClientView.as_view(), name="compat-hybrid-client"),
    path("hybrid/add_key", views.HybridAddKeyView.as_view(), name="compat-hybrid-add-key"),
    path("hybrid/compute", views.HybridComputeView.as_view(), name="compat-hybrid-compute"),
]
