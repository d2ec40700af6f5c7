"""The per-model metric series, zeroed for every active model version."""

from __future__ import annotations

import logging

from django.db import DatabaseError

from base import metrics

logger = logging.getLogger(__name__)


def model_names(active_only: bool = False) -> list[str]:
    from registry.models import ModelVersion

    versions = ModelVersion.objects.all()
    if active_only:
        versions = versions.filter(status=ModelVersion.Status.ACTIVE)
    return sorted(set(versions.values_list("name", flat=True)))


def initialise_model_series() -> None:
    """Zero series per active model for the per-model counters and the latency histogram.

    Called at each scrape: a model registered after the process started gets its series
    then. Reads the database; a database that does not answer leaves them as they are.
    """
    try:
        names = model_names(active_only=True)
    except DatabaseError:
        logger.warning("cannot read the models for their metric series")
        return
    metrics.initialise_model_series(names)
