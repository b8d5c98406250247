"""The model registry: register, create, list, metadata, errors."""

import pytest

from mirror3d.models import registry
from mirror3d.models.registry import (ModelInfo, create_model, is_model, list_models, model_info,
                                      register_model)


@pytest.fixture
def clean_names():
    added = []
    yield added
    for name in added:
        registry._REGISTRY.pop(name, None)
        registry._INFO.pop(name, None)


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


def test_builtin_models_declare_input_kind_size_and_paper_counts():
    """The numbers of the OG-Net paper (Zheng et al. 2022), also asserted against the built
    models in tests/models/ognet/test_model.py."""
    assert model_info("og-net") == ModelInfo("og-net", "mirror3d.models.ognet.model", "points",
                                             4096, 1_951_734)
    assert model_info("og-net-small").paper_params == 1_200_829
    assert model_info("og-net-deep").paper_params == 2_470_477
    cnn = model_info("cnn2d-small")
    assert (cnn.input_kind, cnn.input_size, cnn.paper_params) == ("image", (64, 128), None)
    assert list_models(input_kind="image") == ["cnn2d-small"]
    assert list_models("og-net*", input_kind="points") == ["og-net", "og-net-deep", "og-net-small"]
    with pytest.raises(ValueError, match="input_kind must be one of"):
        list_models(input_kind="voxels")
    with pytest.raises(ValueError, match=r"'og-nett'.*closest registered names"):
        model_info("og-nett")


def test_metadata_is_stored_and_checked(clean_names):
    clean_names += ["zz-test-pts", "zz-test-img", "zz-test-bare"]

    @register_model("zz-test-pts", input_kind="points", input_size=512, paper_params=10)
    def pts():
        return "p"

    @register_model("zz-test-img", input_kind="image", input_size=[32, 64])
    def img():
        return "i"

    @register_model("zz-test-bare")
    def bare():
        return "b"

    assert model_info("zz-test-pts") == ModelInfo("zz-test-pts", __name__, "points", 512, 10)
    assert model_info("zz-test-img").input_size == (32, 64)  # (W, H), stored as a tuple
    assert model_info("zz-test-bare") == ModelInfo("zz-test-bare", __name__)
    assert list_models("zz-test-*", input_kind="points") == ["zz-test-pts"]
    bad = [
        (dict(input_kind="voxels"), "input_kind must be one of"),
        (dict(input_size=64), "input_size needs an input_kind"),
        (dict(input_kind="points", input_size=(64, 128)), "number of points per cloud"),
        (dict(input_kind="points", input_size=0), "number of points per cloud"),
        (dict(input_kind="image", input_size=64), r"is \(W, H\)"),
        (dict(input_kind="image", input_size=(64, 0)), r"is \(W, H\)"),
        (dict(input_kind="points", paper_params=-1), "paper_params must be"),
        (dict(input_kind="points", paper_params=True), "paper_params must be"),
    ]
    for kwargs, message in bad:
        with pytest.raises(ValueError, match=message):
            register_model("zz-test-bad", **kwargs)
    assert not is_model("zz-test-bad")
