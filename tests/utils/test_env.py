"""`import mirror3d` has no side effects; entry points apply the local-run environment."""

import subprocess
import sys
import textwrap


def run_py(code: str) -> str:
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_import_mirror3d_leaves_environment_alone():
    out = run_py("""
        import os
        import torch, torch_geometric  # third-party imports may set variables of their own
        before = dict(os.environ)
        import mirror3d, mirror3d.render, mirror3d.models.ognet
        print(dict(os.environ) == before)
    """)
    assert out == "True"


def test_cli_main_applies_local_env_but_keeps_user_values():
    out = run_py("""
        import os, contextlib, io
        os.environ["RAY_AUTH_MODE"] = "mine"
        from mirror3d.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            main(["--help"])
        print(os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"], os.environ["RAY_AUTH_MODE"])
    """)
    assert out == "0 mine"


def test_ray_workers_run_at_the_drivers_priority(ray_session):
    """RAY_worker_niceness=0 (mirror3d.utils.env): a Ray worker is not niced below the driver
    (Ray's default, nice 15, let any other process take the trainer's CPU first)."""
    import os

    @ray_session.remote(num_cpus=0)
    def niceness() -> int:
        return os.nice(0)

    assert ray_session.get(niceness.remote()) == os.nice(0)
