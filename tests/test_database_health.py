"""Connections are health-checked only after sitting idle (moai_site.postgresql).

Runs on PostgreSQL, the production database, with its own connection outside the test's
transaction: a health check is about a connection kept across requests.
"""

from __future__ import annotations

import pytest
from django.db import connection, connections

from moai_site.postgresql import base

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fresh():
    if connection.vendor != "postgresql":
        pytest.skip("the idle-only health check is PostgreSQL's backend")
    wrapper = connections.create_connection("default")
    yield wrapper
    wrapper.close()


def _count_checks(wrapper, monkeypatch) -> list[int]:
    checks: list[int] = []
    real = wrapper.is_usable

    def counted() -> bool:
        checks.append(1)
        return real()

    monkeypatch.setattr(wrapper, "is_usable", counted)
    return checks


def _query(wrapper) -> int:
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def test_a_connection_used_moments_ago_is_not_checked_again(fresh, monkeypatch):
    assert fresh.settings_dict["CONN_HEALTH_CHECKS"]
    assert isinstance(fresh, base.DatabaseWrapper)
    _query(fresh)
    checks = _count_checks(fresh, monkeypatch)
    fresh.close_if_unusable_or_obsolete()  # what each request and task starts with
    _query(fresh)
    assert checks == []


def test_an_idle_connection_is_checked_and_replaced_when_the_server_dropped_it(fresh, monkeypatch):
    pid = _query(fresh)
    # The server ends the connection while it sits idle, as a database restart would.
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    checks = _count_checks(fresh, monkeypatch)
    fresh.last_used -= base.IDLE_SECONDS + 1
    fresh.close_if_unusable_or_obsolete()
    assert _query(fresh) != pid  # no error: the check found it dead and a new one was opened
    assert checks == [1]
