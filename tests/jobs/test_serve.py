"""Job ``serve`` through the CLI (mirror3d/jobs/serve.py, configs/serve/, serve_config.yaml):
no trained run is one line naming the command that makes one, bad option values are one line,
both before Ray starts; serve_config.yaml is a valid Serve config whose args are the demo's
options. (The running demo: tests/serve_apps/test_rest.py.)"""

from __future__ import annotations

import pathlib

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

import mirror3d.serve_apps.app as app
from mirror3d.cli import main
from mirror3d.jobs import resolve_config
from mirror3d.serve_apps.deployments import model_deployments
from mirror3d.serve_apps.options import DemoOptions

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def no_ray(monkeypatch):
    """Fail the test if the job gets as far as starting Ray."""
    monkeypatch.setattr(app, "ensure_ray", lambda *a, **k: pytest.fail("Ray was started"))


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_no_trained_run_names_the_command_that_makes_one(tmp_path, capsys, no_ray):
    assert main(["serve", "--runs_root", str(tmp_path)]) == 1
    line = _one_error_line(capsys)
    assert line.startswith("mirror3d serve: error: no trained CASL or re-id run under")
    assert app.MAKE_A_RUN in line and 'make run ARGS="--smoke --name smoke"' in line
    assert main(["serve", "--casl", str(tmp_path / "nope"), "--reid", str(tmp_path)]) == 1
    line = _one_error_line(capsys)
    assert f"casl: no run at {tmp_path / 'nope'}" in line and app.MAKE_A_RUN in line


@pytest.mark.parametrize("args, message", [
    (["--port", "0"], "port"),
    (["--port", "http"], "port"),
    (["--max_upload_mb", "-1"], "max_upload_mb"),
    (["--device", "tpu"], "device"),
    (["--top_k", "500"], "top_k: 500 is more than max_k 100"),
    (["--reconstructor.num_cpus", "-0.5"], "reconstructor.num_cpus"),
    (["--search.autoscaling.min_replicas", "3"], "min_replicas 3 > max_replicas 2"),
    (["--search.autoscaling.max_replica", "3"], "did you mean: search.autoscaling.max_replicas"),
    (["--index.method", "lsh"], "index.method"),
    (["--index.method", "hnsw", "--index.nprobe", "8"],
     "index: nprobe set, but they are not parameters of method 'hnsw'; expected ef_construction, "
     "ef_search, m"),
    (["--index.nlist", "100"], "index: nlist set, but they are not parameters of method "
                               "'(as cached)'"),
    (["--index.ef_search", "-1"], "index.ef_search"),
])
def test_bad_option_values_are_one_line_before_ray(capsys, no_ray, args, message):
    assert main(["serve", *args]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("mirror3d serve: error: ") and message in line, line


def test_serve_config_yaml_is_a_serve_config_whose_args_are_the_demo_options():
    data = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    config = ServeDeploySchema.model_validate(data)
    assert config.http_options.host == "127.0.0.1"
    (application,) = config.applications
    assert application.import_path == "mirror3d.serve_apps.app:build_app"
    opts = app.demo_options(application.args)
    assert (opts.host, opts.port) == ("127.0.0.1", config.http_options.port)
    assert opts.reconstructor.autoscaling.max_replicas == 2
    # serve run's key=value arguments arrive as strings, dotted keys reach the sections
    flat = app.demo_options({"port": "8001", "search.autoscaling.max_replicas": "3"})
    assert flat.port == 8001 and flat.search.autoscaling.max_replicas == 3
    assert resolve_config("serve") == DemoOptions()
    smoke = resolve_config("serve", "smoke")
    assert smoke.reconstructor.autoscaling.max_replicas == smoke.search.autoscaling.max_replicas == 1


def test_index_options_reach_the_search_deployment():
    """``--index.*`` become ReidSearch's (and so SearchService's) index_method / index_params;
    parameters left at 0 keep the index's defaults. (Building, saving and loading an approximate
    index: tests/retrieval/test_demo_index.py.)"""
    opts = app.demo_options({"index.method": "ivf", "index.nprobe": "5"})
    _, search = model_deployments(opts, "casl-run", "reid-run")
    kwargs = search._bound_deployment.init_kwargs
    assert kwargs["index_method"] == "ivf" and kwargs["index_params"] == {"nprobe": 5}
    _, search = model_deployments(DemoOptions(), "casl-run", "reid-run")
    kwargs = search._bound_deployment.init_kwargs
    assert kwargs["index_method"] == "" and kwargs["index_params"] == {}
