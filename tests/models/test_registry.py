"""The model registry: register, create, list, errors."""

import pytest

from mirror3d.models import registry
from mirror3d.models.registry import create_model, is_model, list_models, register_model


@pytest.fixture
def clean_names():
    added = []
    yield added
    for name in added:
        registry._REGISTRY.pop(name, None)


def test_register_create_and_list(clean_names):
    clean_names += ["zz-test-a", "zz-test-b"]

    @register_model("zz-test-a")
    def make_a(width=3, **kw):
        return ("a", width, kw)

    @register_model("zz-test-b")
    def make_b():
        return "b"

    assert create_model("zz-test-a", width=5, depth=2) == ("a", 5, {"depth": 2})
    assert create_model("zz-test-b") == "b"
    assert list_models("zz-test-*") == ["zz-test-a", "zz-test-b"]
    assert list_models("zz-test-*", module=__name__) == ["zz-test-a", "zz-test-b"]
    assert list_models("zz-test-*", module="mirror3d.models.ognet") == []
    assert is_model("zz-test-a") and not is_model("zz-test-c")


def test_builtin_models_are_listed_without_importing_them():
    names = list_models()
    assert {"og-net", "og-net-small", "og-net-deep", "cnn2d-small"} <= set(names)
    assert names == sorted(names)
    assert list_models("og-net*") == ["og-net", "og-net-deep", "og-net-small"]


def test_unknown_name_names_it_and_suggests_close_ones():
    with pytest.raises(ValueError, match=r"'og-nett'.*closest registered names: \['og-net'"):
        create_model("og-nett")


def test_duplicate_name_with_other_factory_raises(clean_names):
    clean_names.append("zz-test-dup")

    @register_model("zz-test-dup")
    def first():
        return 1

    with pytest.raises(ValueError, match="zz-test-dup.*already registered"):

        @register_model("zz-test-dup")
        def second():
            return 2

    assert create_model("zz-test-dup") == 1


def test_bad_name():
    with pytest.raises(ValueError, match="non-empty"):
        register_model("")
