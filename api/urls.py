"""The REST API's URLs, included under /api/v1/ by moai_site/urls.py."""

from __future__ import annotations

from django.urls import URLPattern, path

from api import jobs, models_views, sessions

api_v1: list[URLPattern] = [
    path("models", models_views.ModelListView.as_view()),
    path("models/<str:name>", models_views.ModelDetailView.as_view()),
    path("models/<str:name>/client.zip", models_views.ModelClientBundleView.as_view()),
    path("models/<str:name>/preprocessing.skops", models_views.ModelPreprocessingView.as_view()),
    path("models/<str:name>/sessions", sessions.SessionCreateView.as_view()),
    path("sessions/<str:context_id>", sessions.SessionDetailView.as_view()),
    path("sessions/<str:context_id>/jobs", jobs.JobSubmitView.as_view()),
    path("jobs/<str:job_id>", jobs.JobDetailView.as_view()),
    path("jobs/<str:job_id>/result", jobs.JobResultView.as_view()),
]
