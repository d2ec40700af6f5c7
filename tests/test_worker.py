"""The Celery task's contract with the job row: claim once, refuse ended sessions, fail lost jobs."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
from billiard.exceptions import WorkerLostError
from django.core.files.storage import default_storage
from django.utils import timezone

from base.audit import Actor
from jobs import ending, services, tasks, worker
from jobs.models import Job
from sessions.models import KeySession
from tests.helpers import post_bytes


@pytest.fixture
def queued_job(alice, logreg, open_session, bundles, django_capture_on_commit_callbacks):
    context_id = open_session(alice, logreg)
    with django_capture_on_commit_callbacks(execute=False):
        response = post_bytes(
            alice.http, f"/api/v1/sessions/{context_id}/jobs", bundles["breast-cancer-logreg"].encrypt(0)
        )
    return Job.objects.get(pk=response.json()["job_id"])


def test_a_redelivered_message_does_not_run_a_job_twice(queued_job):
    tasks.run_job(str(queued_job.id))
    tasks.run_job(str(queued_job.id))
    queued_job.refresh_from_db()
    assert (queued_job.status, queued_job.attempts) == ("succeeded", 1)
    assert services.claim_job(str(queued_job.id)) is None
    assert default_storage.exists(queued_job.output_name(0))


def test_a_job_of_an_ended_session_is_cancelled_and_never_runs(queued_job):
    ending.end_session(queued_job.session, KeySession.Status.INVALIDATED, Actor.system("t"), "incident")
    tasks.run_job(str(queued_job.id))
    queued_job.refresh_from_db()
    assert (queued_job.status, queued_job.error_code, queued_job.attempts) == ("cancelled", "context_invalidated", 0)
    assert not default_storage.exists(queued_job.output_name(0))


def test_a_running_job_fails_if_its_session_ends_before_it_runs(queued_job):
    services.claim_job(str(queued_job.id))
    KeySession.objects.filter(pk=queued_job.session_id).update(status=KeySession.Status.INVALIDATED, keys_blob="")
    Job.objects.filter(pk=queued_job.pk).update(status=Job.Status.QUEUED)
    tasks.run_job(str(queued_job.id))
    queued_job.refresh_from_db()
    assert (queued_job.status, queued_job.error_code) == ("failed", "context_invalidated")


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("Worker exited prematurely: signal 6 (SIGABRT) Job: 3.", "circuit_aborted"),
        ("Worker exited prematurely: signal 11 (SIGSEGV) Job: 3.", "circuit_aborted"),
        ("Worker exited prematurely: signal 9 (SIGKILL) Job: 3.", "worker_lost"),
        ("Worker exited prematurely: exitcode 1 Job: 3.", "worker_lost"),
    ],
)
def test_a_lost_process_fails_its_running_job_with_a_code(queued_job, message, code):
    services.claim_job("message-1")
    # Celery sends this signal from the parent process when a pool process dies; the
    # message's own argument names no job that matters: its claim token does.
    tasks._fail_job_of_lost_process(
        sender=tasks.run_job, task_id="message-1", exception=WorkerLostError(message), args=("another-job",)
    )
    queued_job.refresh_from_db()
    assert (queued_job.status, queued_job.error_code) == ("failed", code)


def test_a_lost_process_of_another_message_fails_nothing(queued_job):
    services.claim_job("message-1")
    tasks._fail_job_of_lost_process(
        sender=tasks.run_job, task_id="message-2", exception=WorkerLostError("signal 9"), args=(str(queued_job.id),)
    )
    queued_job.refresh_from_db()
    assert queued_job.status == "running"


@pytest.fixture
def two_sessions_jobs(alice, logreg, open_session, bundles, django_capture_on_commit_callbacks):
    """A job of session A submitted first, then a job of session B; both queued."""
    jobs = []
    for _ in range(2):
        context_id = open_session(alice, logreg)
        with django_capture_on_commit_callbacks(execute=False):
            response = post_bytes(
                alice.http, f"/api/v1/sessions/{context_id}/jobs", bundles["breast-cancer-logreg"].encrypt(0)
            )
        jobs.append(Job.objects.get(pk=response.json()["job_id"]))
    return jobs


def keys_of_their_own(*jobs: Job) -> None:
    """The jobs' sessions as sessions whose keys are theirs alone (an iris tree's, not logreg's
    constant keys, which every pool process holds warm): what session affinity is for."""
    for job in jobs:
        KeySession.objects.filter(pk=job.session_id).update(key_fingerprint=f"{job.session_id.hex:0<64}")


def test_a_process_takes_the_job_of_a_session_whose_keys_it_holds_first(two_sessions_jobs, settings):
    first, second = two_sessions_jobs
    keys_of_their_own(first, second)
    settings.MOAI_AFFINITY_MAX_WAIT_SECONDS = 60
    claimed = services.claim_job("message-1", warm_sessions=[str(second.session_id)])
    assert getattr(claimed, "pk", None) == second.pk
    assert claimed.claim_token == "message-1"
    # A process holding neither session's keys takes the oldest.
    other = services.claim_job("message-2", warm_sessions=["00000000-0000-0000-0000-000000000000"])
    assert getattr(other, "pk", None) == first.pk
    assert services.claim_job("message-3") is None


def test_a_session_with_its_versions_constant_keys_is_warm_in_every_process(
    two_sessions_jobs, settings, django_assert_max_num_queries
):
    """Logreg's keys are the same bytes for every session, held warm by every pool process: the
    oldest job goes first, whichever session's keys the process holds in its key cache, and
    without a look for a job of a warm session (one statement on PostgreSQL, two on SQLite)."""
    from django.db import connection

    first, second = two_sessions_jobs
    settings.MOAI_AFFINITY_MAX_WAIT_SECONDS = 60
    with django_assert_max_num_queries(1 if connection.vendor == "postgresql" else 2):
        claimed = services.claim_job("message-1", warm_sessions=[str(second.session_id)])
    assert getattr(claimed, "pk", None) == first.pk


def test_the_oldest_job_goes_first_once_it_has_waited_long_enough(
    two_sessions_jobs, settings, django_assert_max_num_queries
):
    from django.db import connection

    first, second = two_sessions_jobs
    keys_of_their_own(first, second)
    settings.MOAI_AFFINITY_MAX_WAIT_SECONDS = 5
    Job.objects.filter(pk=first.pk).update(submitted_at=timezone.now() - timedelta(seconds=6))
    # Taken at once, without a look for a job of a warm session: one statement on PostgreSQL.
    with django_assert_max_num_queries(1 if connection.vendor == "postgresql" else 2):
        claimed = services.claim_job("message-1", warm_sessions=[str(second.session_id)])
    assert getattr(claimed, "pk", None) == first.pk


def test_affinity_off_runs_jobs_oldest_first(two_sessions_jobs, settings):
    first, second = two_sessions_jobs
    keys_of_their_own(first, second)
    settings.MOAI_AFFINITY_MAX_WAIT_SECONDS = 0
    claimed = services.claim_job("message-1", warm_sessions=[str(second.session_id)])
    assert getattr(claimed, "pk", None) == first.pk


def test_every_message_runs_one_job_whichever_it_names(two_sessions_jobs):
    first, second = two_sessions_jobs
    # Both messages name the first job; they still run both, one each.
    tasks.run_job(str(first.pk))
    tasks.run_job(str(first.pk))
    for job in (first, second):
        job.refresh_from_db()
        assert (job.status, job.attempts) == ("succeeded", 1)


def test_heartbeats_reach_the_job_a_message_claimed(two_sessions_jobs, monkeypatch):
    from celery.worker import state

    first, _ = two_sessions_jobs
    services.claim_job("message-1")
    Job.objects.filter(pk=first.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
    request = SimpleNamespace(id="message-1", name=tasks.run_job.name, args=("some-other-job",))
    monkeypatch.setattr(state, "active_requests", [request])
    worker._heartbeat_round()
    first.refresh_from_db()
    assert first.heartbeat_at > timezone.now() - timedelta(seconds=30)


def test_batch_threads_share_the_processes_openmp_threads(monkeypatch):
    from concrete import fhe  # noqa: F401  (loads Concrete's OpenMP runtime, as a job does)

    from jobs import cores, runtime

    library = cores._openmp_library()
    assert library is not None
    seen: dict[int, tuple[str, int]] = {}

    def work(index: int) -> None:
        seen[index] = (threading.current_thread().name, library.omp_get_max_threads())

    before = library.omp_get_max_threads()
    runtime.run_side_by_side(work, range(4), parallel=2, threads=4)
    assert sorted(seen) == [0, 1, 2, 3]
    assert {threads for _, threads in seen.values()} == {2}  # the job's 4 OpenMP threads, 2 inputs at a time
    assert all(name.startswith("batch") for name, _ in seen.values())
    assert library.omp_get_max_threads() == before  # the setting is per thread


def test_an_error_in_one_input_stops_the_batch_after_the_running_ones(monkeypatch):
    from jobs import runtime

    started: list[int] = []
    finished: list[int] = []

    def work(index: int) -> None:
        started.append(index)
        if index == 0:
            raise runtime.CircuitInputError("bad ciphertext")
        time.sleep(0.2)
        finished.append(index)

    with pytest.raises(runtime.CircuitInputError):
        runtime.run_side_by_side(work, range(10), parallel=2)
    # Nothing of a later round starts. Input 1, of the first round, may not have started yet
    # when 0 failed (then it is never started); if it had, it ran to its end before the raise.
    assert 0 in started
    assert set(started) <= {0, 1}
    assert finished == [index for index in started if index != 0]


def test_a_message_whose_chosen_client_was_served_meanwhile_takes_another_job(
    two_sessions_jobs,
    mallory,
    make_tenant,
    logreg,
    open_session,
    bundles,
    django_capture_on_commit_callbacks,
    monkeypatch,
):
    """The turn is read, then the client's oldest job: another process may take that job in between.
    The message must still take a queued job, or that job is left without a turn (seen under load).
    A second client's queued job makes the claim work out whose turn it is."""
    carol = make_tenant("carol")
    with django_capture_on_commit_callbacks(execute=False):
        context_id = open_session(carol, logreg)
        response = post_bytes(carol.http, f"/api/v1/sessions/{context_id}/jobs", bundles[logreg.name].encrypt(0))
    assert response.status_code == 202, response.content
    real_turn = services._client_whose_turn_it_is
    calls = []

    def served_meanwhile():
        calls.append(1)
        # The first answer names a client whose queue another process has just emptied.
        return mallory.client.pk if len(calls) == 1 else real_turn()

    monkeypatch.setattr(services, "_client_whose_turn_it_is", served_meanwhile)
    claimed = services.claim_job("message-1")
    assert claimed is not None
    assert claimed.status == "running"
    assert len(calls) == 2
    assert Job.objects.filter(status="queued").count() == 2


def test_a_claimed_job_knows_how_many_jobs_wait_behind_it(two_sessions_jobs):
    """The count its thread share is worked out from (jobs.cores.company)."""
    first = services.claim_job("message-1")
    assert (getattr(first, "pk", None), getattr(first, "queued_behind", None)) == (two_sessions_jobs[0].pk, 1)
    second = services.claim_job("message-2")
    assert (getattr(second, "pk", None), getattr(second, "queued_behind", None)) == (two_sessions_jobs[1].pk, 0)


def test_a_head_this_process_would_take_is_read_and_claimed_in_one_query(two_sessions_jobs, django_assert_num_queries):
    """The common claim: one client's jobs queued, no warm session to prefer (services._claim_head)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("the one-statement claim is PostgreSQL's (a data-modifying CTE)")
    first = two_sessions_jobs[0]
    with django_assert_num_queries(1):
        claimed = services.claim_job("message-1", warm_sessions=[str(first.session_id)])
        assert claimed is not None
        # The related rows came with it, as the read alone brings them.
        related = (claimed.session.status, claimed.model_version.name, claimed.client.name)
    assert related == ("active", "breast-cancer-logreg", "alice")
    stored = Job.objects.get(pk=first.pk)
    for field in ("status", "attempts", "claim_token", "started_at", "heartbeat_at"):
        assert getattr(claimed, field) == getattr(stored, field), field
    assert (stored.status, stored.attempts, stored.claim_token) == ("running", 1, "message-1")
    assert claimed.queued_behind == 1


def test_a_loaded_circuit_runs_each_input_as_concretes_server_would_without_its_per_call_setup(
    bundles, tmp_path, monkeypatch
):
    """Outputs byte for byte those of ``fhe.Server.run``, from threads side by side, one handle each."""
    from concrete import fhe
    from concrete.compiler import ServerProgram

    from jobs import runtime

    bundle = bundles["breast-cancer-logreg"]
    model = runtime.LoadedModel(bundle.folder / "server.zip", tmp_path / "loaded")
    keys = fhe.EvaluationKeys.deserialize(bundle.evaluation_keys)
    ciphertexts = [bundle.encrypt(row) for row in range(4)]
    expected = [model.server.run(fhe.Value.deserialize(c), evaluation_keys=keys).serialize() for c in ciphertexts]
    made: list[str] = []

    class CountedProgram(ServerProgram):  # the real program, counted
        def __init__(self, *args: object) -> None:
            made.append(threading.current_thread().name)
            super().__init__(*args)

    monkeypatch.setattr("concrete.compiler.ServerProgram", CountedProgram)

    def per_call_setup(*args: object, **kwargs: object) -> None:
        raise AssertionError("Server.run makes its handle again on every call")

    monkeypatch.setattr(model.server, "run", per_call_setup)
    outputs: dict[int, bytes] = {}

    def work(index: int) -> None:
        outputs[index] = model.run(ciphertexts[index % 4], keys)

    runtime.run_side_by_side(work, range(8), parallel=2, threads=2)
    assert [outputs[i] for i in range(8)] == expected * 2
    assert [bundle.decrypt_label(outputs[i]) for i in range(4)] == list(
        bundle.built.clear_predict(bundle.samples["X"][:4])
    )
    assert len(made) == len(set(made)) == 2  # one handle per thread, kept for its next inputs
    for index in range(2):
        work(index)
    assert len(made) == 3  # this thread's own, made once
    model.close()
