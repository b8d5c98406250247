import importlib.util
import pathlib

import pytest

_FIX = pathlib.Path(__file__).resolve().parents[1] / "data" / "fixtures.py"


@pytest.fixture(scope="session")
def data_fixtures():
    spec = importlib.util.spec_from_file_location("mirror3d_tests_data_fixtures_platform", _FIX)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
