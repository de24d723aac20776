"""The job-status sync against a job server that cannot be reached (a real Ray job client on a
closed loopback port, no Ray cluster): not being able to ask is not an answer."""

from __future__ import annotations

import socket
import time

import pytest

from deployments.limits import Limits
from deployments.training_jobs import TrainingJobs
from registry import Registry, Settings


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


@pytest.fixture()
def training(tmp_path):
    settings = Settings.from_env(storage=str(tmp_path / "storage"),
                                 db_url=f"sqlite:///{tmp_path}/registry.db")
    registry = Registry(settings)
    registry.create_version("m", status="training")
    registry.update_version("m", 1, job_id="rnnserve-m-v1-0000")
    jobs = TrainingJobs(registry, settings, Limits(), f"http://127.0.0.1:{closed_port()}",
                        unreachable_grace_s=3600)
    return registry, jobs


def test_an_unreachable_job_server_fails_nothing_within_the_grace(training):
    registry, jobs = training
    assert jobs.sync_statuses() == [] and jobs.sync_statuses() == []
    assert registry.get_version("m", 1).status == "training"


def test_past_the_grace_the_version_fails_and_a_finished_run_still_publishes(training, tmp_path):
    registry, jobs = training
    jobs.sync_statuses()  # the outage starts
    jobs.unreachable_grace_s = 0
    assert jobs.sync_statuses() == [("m", 1, "failed")]
    assert any("unreachable" in line for line in registry.read_logs("m", 1))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.weights.h5").write_text("w")
    assert registry.publish_version("m", 1, str(tmp_path / "out")).status == "ready"


def test_timeout_counts_from_submission_even_when_no_step_runs(tmp_path):
    settings = Settings.from_env(storage=str(tmp_path / "storage"),
                                 db_url=f"sqlite:///{tmp_path}/registry.db")
    registry = Registry(settings)
    registry.create_version("slow", params={"timeout_s": 0.2})
    registry.update_version("slow", 1, job_id="rnnserve-slow-v1-0000")
    jobs = TrainingJobs(registry, settings, Limits(), f"http://127.0.0.1:{closed_port()}",
                        unreachable_grace_s=3600)
    assert jobs.sync_statuses() == []  # within its time (the job server being away is no end)
    time.sleep(0.3)
    assert jobs.sync_statuses() == [("slow", 1, "failed")]
    assert any("timeout_s" in line for line in registry.read_logs("slow", 1))


def test_an_overdue_version_fails_before_its_job_is_stopped(tmp_path):
    """A trainer that is stopped records its version `cancelled` unless it has ended already:
    stopped first, an overdue run raced the sync and ended `cancelled` (seen in a test run).
    The job server here is a stand-in that records when the stop comes."""
    settings = Settings.from_env(storage=str(tmp_path / "storage"),
                                 db_url=f"sqlite:///{tmp_path}/registry.db")
    registry = Registry(settings)
    registry.create_version("slow", params={"timeout_s": 0.1})
    registry.update_version("slow", 1, job_id="rnnserve-slow-v1-0000")
    jobs = TrainingJobs(registry, settings, Limits(), "http://127.0.0.1:1")
    status_when_stopped = []

    class JobServer:
        def stop_job(self, job_id):
            status_when_stopped.append((job_id, registry.get_version("slow", 1).status))

    jobs._client = JobServer()
    time.sleep(0.2)
    assert jobs.sync_statuses() == [("slow", 1, "failed")]
    assert status_when_stopped == [("rnnserve-slow-v1-0000", "failed")]


def test_a_version_whose_job_was_never_submitted_fails_after_a_while(tmp_path, monkeypatch):
    import deployments.training_jobs as training_jobs

    settings = Settings.from_env(storage=str(tmp_path / "storage"),
                                 db_url=f"sqlite:///{tmp_path}/registry.db")
    registry = Registry(settings)
    registry.create_version("orphan")  # queued, no job: the server died before submitting
    registry.create_version("manual", status="training")  # a run started by hand: no job id
    jobs = TrainingJobs(registry, settings, Limits(), f"http://127.0.0.1:{closed_port()}")
    assert jobs.sync_statuses() == []
    monkeypatch.setattr(training_jobs, "NEVER_SUBMITTED_AFTER_S", 0.0)
    assert jobs.sync_statuses() == [("orphan", 1, "failed")]
    assert registry.get_version("manual", 1).status == "training"
