"""Job submission end to end (issue 15, deliverable 4): a user's ``ray job submit`` of the
top-level job scripts against a ``ray start --head`` cluster.

The module starts its own head node (``ray start --head --block`` on 127.0.0.1, its own ports and
temporary directory, so it shares nothing with the test session's Ray or any other local Ray) and
submits with the ``ray`` CLI exactly as the README tells a user to::

    ray job submit --address http://127.0.0.1:<dashboard> --working-dir <repo> \\
        --runtime-env-json '{"excludes": [...], "env_vars": {...}}' -- python jobs/train_casl.py ...

Which code runs: the job's shell resolves ``python`` on the head's ``PATH``, which starts with the
venv's ``bin`` (as in a shell with the venv activated), so the interpreter and the dependencies
are the venv's. Ray unpacks the uploaded working directory, makes it the job's current directory
and puts it first on ``PYTHONPATH``, so ``import mirror3d`` finds the *uploaded copy* before the
editable install of the repository (whose finder sits at the end of ``sys.meta_path``): the job
runs the code that was submitted, as on a real cluster where the install may be older.
:func:`test_the_job_runs_the_uploaded_working_dir` checks that every ``mirror3d`` module the job
imports comes from that copy.

The excludes are anchored at the working directory's root (``/data/``, not ``data/``): Ray
matches them with gitignore rules, where ``data/`` is every folder named ``data`` at any depth,
so it would also drop the package ``mirror3d/data/`` from the upload; the job would then import
that one package from the editable install instead, silently mixing two versions of the code.

The head is stopped without ``ray stop`` (which stops every Ray of the machine): SIGTERM to the
``ray start --block`` process (started in a session of its own), whose handler stops the
processes it started, then SIGKILL to its process group, then any process left that names this
module's temporary folder on its command line, by its pid.

Time: the four jobs are submitted together: the CASL training (one worker of one CPU) and the
lifting share the head's 2 CPUs while the sweep's driver starts; its two trials of one CPU follow.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import dataset_fixtures
import pyarrow.parquet as pq
import pytest
from reid_fixtures import market_and_shards

from mirror3d.utils.env import LOCAL_ENV

REPO = pathlib.Path(__file__).resolve().parents[2]
#: The venv's bin folder: its ``ray`` CLI, and the ``python`` the jobs run.
VENV_BIN = pathlib.Path(sys.executable).parent
#: What the upload leaves out, anchored at the working directory's root (see the module doc).
EXCLUDES = ["/data/", "/runs/", "/.venv/", "/.git/", "/benchmarks/results/", "**/__pycache__"]
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
#: Longest wait for one job to end (generous: on the loaded 2-core machine a smoke job took ~2 min).
JOB_TIMEOUT_S = 240


@dataclass
class Head:
    """A running ``ray start --head`` node and what the tests need to talk to it."""

    address: str  # the job server: http://127.0.0.1:<dashboard port>
    env: dict[str, str]  # for the ray CLI (the head's own environment)
    base: pathlib.Path  # this module's temporary folder (Ray's temp dir, storage, data)
    storage: pathlib.Path  # the jobs' --storage location
    client: object  # ray.job_submission.JobSubmissionClient, for polling
    runtime_env: dict
    probe_logs: str = ""  # the logs of the first job, :data:`PROBE`


def _free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def _pids_naming(token: str) -> list[int]:
    """Processes (other than this one) whose command line contains ``token``."""
    pids = []
    for proc in pathlib.Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if token in cmdline:
            pids.append(int(proc.name))
    return pids


def _tail(path: pathlib.Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def _stop_head(proc: subprocess.Popen, base: pathlib.Path) -> None:
    """Stop the head started as ``proc`` (``ray start --block``, a process-group leader) and
    whatever it left behind."""
    proc.terminate()  # its SIGTERM handler stops the processes it started (no drain: env)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # anything of its group still there
    proc.wait()
    # Workers and job drivers run in process groups of their own; they exit once the raylet
    # and the job supervisor are gone. Whatever is still there after a grace period and names
    # this module's folder (Ray's temp dir, the jobs' storage or data) is ours: kill by pid.
    deadline = time.monotonic() + 10
    while _pids_naming(str(base)) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in _pids_naming(str(base)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _status(client, job_id: str, timeout_s: float) -> str:
    """The job's status once it is final (or whatever it is after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while (status := str(client.get_job_status(job_id))) not in TERMINAL:
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return status


@pytest.fixture(scope="module")
def head(mlflow_store):
    """A ``ray start --head`` node on 127.0.0.1 with 2 CPUs, its own ports and temp dir."""
    from ray.job_submission import JobSubmissionClient

    base = pathlib.Path(tempfile.mkdtemp(prefix="m3d-jobs-"))  # short: Ray's socket paths
    storage = base / "storage"
    (gcs, dashboard, client_server, agent_http, agent_grpc, env_agent, metrics, node_manager,
     object_manager) = _free_ports(9)
    env = {**os.environ, **LOCAL_ENV,
           "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # as if activated
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}  # stop at once on SIGTERM (no Serve)
    env.pop("RAY_ADDRESS", None)
    cmd = [str(VENV_BIN / "ray"), "start", "--head", "--block",
           "--node-ip-address", "127.0.0.1", "--port", str(gcs),
           "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
           "--ray-client-server-port", str(client_server),
           "--dashboard-agent-listen-port", str(agent_http),
           "--dashboard-agent-grpc-port", str(agent_grpc),
           "--runtime-env-agent-port", str(env_agent), "--metrics-export-port", str(metrics),
           "--node-manager-port", str(node_manager), "--object-manager-port", str(object_manager),
           "--num-cpus", "2", "--temp-dir", str(base / "ray"), "--disable-usage-stats"]
    log = base / "ray_start.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=base, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        client = None
        deadline = time.monotonic() + 90
        while client is None:
            if proc.poll() is not None:
                pytest.fail(f"ray start --head exited with {proc.returncode}:\n{_tail(log)}")
            if time.monotonic() > deadline:
                pytest.fail(f"the head's job server did not answer at {address}:\n{_tail(log)}")
            try:
                client = JobSubmissionClient(address)
                client.list_jobs()
            except (OSError, RuntimeError):  # not up yet (connection refused, HTTP 5xx)
                client = None
                time.sleep(1)
        runtime_env = {
            "excludes": EXCLUDES,
            # the session's throw-away MLflow store (tests/conftest.py), never runs/mlflow
            "env_vars": {"MLFLOW_TRACKING_URI": mlflow_store.as_uri(),
                         "MLFLOW_ALLOW_FILE_STORE": "true"},
        }
        head = Head(address, env, base, storage, client, runtime_env)
        head.probe_logs = _first_job(head, log)
        yield head
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                for job in client.list_jobs():
                    if str(job.status) not in TERMINAL:
                        client.stop_job(job.submission_id)
        _stop_head(proc, base)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def data(head):
    """Tiny datasets for the jobs, outside the repository (the upload leaves data/ out): a
    Market-HQ tree for CASL, a Market-1501 tree and its flat shards for lifting and OG-Net."""
    hq = dataset_fixtures.make_market_hq(head.base / "data" / "hq", size=(32, 64))
    market, shards = market_and_shards(head.base / "data" / "reid")
    return {"hq": hq, "market": market, "shards": shards}


_counter = iter(range(1000))

#: The first job: where the job's python, current directory and mirror3d modules come from.
PROBE = ("import json, os, sys, mirror3d.cli, mirror3d.data.readers; "
         "print('PROBE ' + json.dumps({'exe': sys.executable, 'cwd': os.getcwd(), "
         "'files': sorted(m.__file__ for n, m in sys.modules.items() "
         "if n.split('.')[0] == 'mirror3d' and getattr(m, '__file__', None))}))")


def submit(head: Head, **commands: list[str]) -> dict[str, str]:
    """``ray job submit --no-wait -- python <command...>`` from the repository, one CLI process
    per named command, all at once; the job ids by name."""
    ids, running = {}, {}
    for name, command in commands.items():
        ids[name] = f"m3d-{name}-{next(_counter)}-{os.getpid()}"
        cmd = [str(VENV_BIN / "ray"), "job", "submit", "--address", head.address,
               "--submission-id", ids[name], "--working-dir", str(REPO),
               "--runtime-env-json", json.dumps(head.runtime_env), "--no-wait",
               "--", "python", *command]
        running[name] = subprocess.Popen(cmd, env=head.env, cwd=REPO, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True)
    for name, proc in running.items():
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"ray job submit of {name} failed:\n{out}"
    return ids


def wait(head: Head, job_id: str, *, cli_logs: bool = False) -> tuple[str, str]:
    """Wait for the job to end; its final status and its logs (with ``cli_logs``: as ``ray job
    logs`` prints them, else from the job server's API)."""
    status = _status(head.client, job_id, JOB_TIMEOUT_S)
    if status not in TERMINAL:
        head.client.stop_job(job_id)
        pytest.fail(f"job {job_id} still {status} after {JOB_TIMEOUT_S} s:\n"
                    f"{head.client.get_job_logs(job_id)[-3000:]}")
    if not cli_logs:
        return status, head.client.get_job_logs(job_id)
    logs = subprocess.run([str(VENV_BIN / "ray"), "job", "logs", "--address", head.address,
                           job_id], env=head.env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert logs.returncode == 0, logs.stderr
    return status, logs.stdout


def _first_job(head: Head, log: pathlib.Path) -> str:
    """Submit :data:`PROBE` until it succeeds (at most 3 times); its logs. It is also the check
    that the head is ready: a head just started on a loaded machine has dropped its first
    submission (the job server closing the connection, or the job failing in its set-up)."""
    failures = []
    for _ in range(3):
        try:
            job_id = submit(head, probe=["-c", PROBE])["probe"]
        except AssertionError as e:
            failures.append(str(e)[-500:])
            time.sleep(2)
            continue
        status, logs = wait(head, job_id)
        if status == "SUCCEEDED":
            return logs
        failures.append(f"{job_id} {status}: {head.client.get_job_info(job_id).message}\n"
                        f"{logs[-1000:]}")
    pytest.fail("the head never ran the first job:\n" + "\n".join(failures) + "\n" + _tail(log))


@pytest.fixture(scope="module")
def first_jobs(head, data):
    """Four jobs submitted together: the bad argument takes no CPU of the cluster (it starts
    no Ray work); the CASL training (its one Ray Train worker given one CPU) and the lifting
    (one actor of one CPU) share the head's two; the sweep's trials (one CPU each) wait for
    them while its driver starts (Ray queues what does not fit)."""
    storage = ["--storage", str(head.storage)]
    overrides = (f"data.shards={data['shards']} data.images={data['market']} optim.batch_size=6 "
                 f"optim.instances=2 optim.epochs=1 tracking.mlflow=false")
    return submit(
        head,
        bad=["jobs/train_casl.py", "--smoke", *storage, "--name", "rejected",
             "--optim.epochs", "-3"],
        casl=["jobs/train_casl.py", "--smoke", *storage, "--name", "submitted",
              "--ray.cpus_per_worker", "1", "--data.root", str(data["hq"]),
              "--data.ratio_range", "0.0,1.0", "--data.clean_range", "0.0,1.0"],
        lift=["jobs/lift.py", "--smoke", *storage, "--name", "submitted",
              "--root", str(data["market"])],
        sweep=["jobs/sweep.py", "ognet_k", "--smoke", *storage, "--overrides", overrides])


def result_line(logs: str, prefix: str) -> str:
    """The job's last output line starting with ``prefix`` (its result line)."""
    lines = [ln.strip() for ln in logs.splitlines() if ln.strip().startswith(prefix)]
    assert lines, logs[-3000:]
    return lines[-1]


def probed(head: Head) -> dict:
    """What :data:`PROBE` printed: the job's python, current directory, mirror3d files."""
    return json.loads(result_line(head.probe_logs, "PROBE ")[len("PROBE "):])


def test_the_job_runs_the_uploaded_working_dir(head):
    """The job's ``python`` is the venv's, its current directory is Ray's unpacked copy of the
    upload (without data/, runs/, .venv/), and every mirror3d module it imports comes from there,
    mirror3d/data/ included."""
    seen = probed(head)
    assert pathlib.Path(seen["exe"]).parent == VENV_BIN
    cwd = pathlib.Path(seen["cwd"])
    assert cwd.is_relative_to(head.base / "ray") and cwd != REPO  # Ray's copy, on this head
    assert (cwd / "jobs" / "train_casl.py").is_file() and (cwd / "mirror3d" / "data").is_dir()
    assert not any((cwd / d).exists() for d in ("data", "runs", ".venv", ".git"))
    assert len(seen["files"]) > 3
    assert all(pathlib.Path(f).is_relative_to(cwd) for f in seen["files"]), seen["files"]


def test_a_bad_argument_fails_the_job_with_one_error_line(head, first_jobs):
    """A bad value ends the job FAILED; ``ray job logs`` has the CLI's one error line and no
    traceback."""
    status, logs = wait(head, first_jobs["bad"], cli_logs=True)
    assert status == "FAILED", logs[-3000:]
    errors = [ln for ln in logs.splitlines() if "error:" in ln]
    assert errors == ["mirror3d train-casl: error: optim.epochs: must be in [1, 100000], got -3"], \
        logs[-3000:]
    assert "Traceback" not in logs
    assert not (head.storage / "casl" / "rejected").exists()


def test_train_casl_smoke_job(head, first_jobs):
    """``python jobs/train_casl.py --smoke --storage S``: SUCCEEDED, the run in S/casl/<name>."""
    status, logs = wait(head, first_jobs["casl"])
    assert status == "SUCCEEDED", logs[-3000:]
    run = head.storage / "casl" / "submitted"
    for name in ("config.yaml", "metrics.jsonl", "model_final.pt", "train_summary.json"):
        assert (run / name).is_file(), (name, sorted(p.name for p in run.glob("*")))
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["epochs_run"] == 2  # the smoke preset's two epochs
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["epoch"] for ln in lines] == [0, 1]  # one line per epoch
    line = result_line(logs, "train-casl: held-out mask IoU")
    assert line.endswith(f"after 2 epochs -> {run}")


def test_lift_smoke_job(head, first_jobs):
    """``python jobs/lift.py --smoke --storage S``: SUCCEEDED, the shards and the lifting run in S."""
    status, logs = wait(head, first_jobs["lift"])
    assert status == "SUCCEEDED", logs[-3000:]
    line = result_line(logs, "lift flat: ")
    shards_dir = pathlib.Path(line.split(" -> ", 1)[1].split(" (", 1)[0])
    run = pathlib.Path(line.rsplit("; run: ", 1)[1])
    assert run == head.storage / "lift" / "submitted", line
    assert shards_dir.is_relative_to(head.storage), f"shards outside the storage: {line}"
    shards = sorted(shards_dir.glob("*.parquet"))
    assert shards and sum(pq.read_metadata(s).num_rows for s in shards) == int(line.split()[2])
    for name in ("summary.json", "bad_images.txt", "config.yaml"):
        assert (run / name).is_file(), (name, sorted(p.name for p in run.glob("*")))
    assert len(list((run / "pictures").glob("*.png"))) == 1  # the smoke preset's one picture


def test_sweep_smoke_job(head, first_jobs):
    """``python jobs/sweep.py ognet_k --smoke --storage S``: SUCCEEDED, the sweep in
    S/sweep/ognet_k-smoke with both trials finished."""
    status, logs = wait(head, first_jobs["sweep"])
    assert status == "SUCCEEDED", logs[-3000:]
    sweep = head.storage / "sweep" / "ognet_k-smoke"
    assert result_line(logs, "sweep: 2 trials").endswith(f"-> {sweep / 'summary.md'}")
    rows = pq.read_table(sweep / "trials.parquet").to_pylist()
    assert sorted(r["model.k"] for r in rows) == [1, 8]
    assert all(r["status"] == "finished" for r in rows), rows
    for r in rows:
        assert pathlib.Path(r["checkpoint"]).is_relative_to(sweep), r["checkpoint"]
        assert pathlib.Path(r["checkpoint"]).is_file()
    assert (sweep / "best.yaml").is_file() and (sweep / "summary.md").is_file()


def test_no_job_wrote_into_its_working_dir_copy(head):
    """Every job's outputs went to the storage location: nothing (no runs/, no data/) appeared
    in Ray's copy of the uploaded working directory, which is gone when the cluster is."""
    cwd = pathlib.Path(probed(head)["cwd"])
    made = [str(p.relative_to(cwd)) for p in (cwd / "runs", cwd / "data") if p.exists()]
    assert not made, f"written into the job's working directory copy: {made}"
