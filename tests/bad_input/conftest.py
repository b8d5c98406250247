"""Fixtures of the bad-input matrix: the valid inputs (once per session), Ray forbidden, and
every case working in its own temporary folder."""

from __future__ import annotations

import pytest

from bad_input.bad_fixtures import Inputs, build_inputs


class RayStarted(BaseException):
    """Raised when a case starts Ray: every error of the matrix must come before Ray (a
    BaseException, so that no handler of the job turns it into an error line)."""


@pytest.fixture(scope="session")
def inputs(tmp_path_factory) -> Inputs:
    """The valid inputs every case starts from (bad_fixtures.build_inputs)."""
    return build_inputs(tmp_path_factory.mktemp("bad_input_inputs"))


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    """Ray may not start (nor be reused from an earlier test of the session)."""
    import ray
    import ray._private.worker as worker

    def refuse(*args, **kwargs):
        raise RayStarted("Ray was started: the error must be found before any Ray work")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setattr(worker, "init", refuse)


@pytest.fixture
def work(tmp_path, monkeypatch):
    """The case's folder, also the working directory (so that default relative outputs such
    as ``runs/`` land where the no-partial-output check looks)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
