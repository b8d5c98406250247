import pytest
import torch

from mirror3d.models.casl.backbones import ResNetBackbone
from mirror3d.models.casl.blocks import ChannelGate, GatedResidualStack


def _tiny(**kw):
    args = dict(base_channels=4, blocks_per_stage=(1, 1, 1, 1))
    args.update(kw)
    return ResNetBackbone(**args)


@pytest.mark.parametrize("wh", [(64, 128), (128, 128), (96, 160), (32, 64)])
def test_stage_shapes_and_strides(wh):
    w, h = wh
    net = _tiny()
    feats = net(torch.rand(2, 4, h, w))
    assert net.stage_channels == (4, 8, 16, 32) and net.strides == (4, 8, 16, 32)
    for f, c, s in zip(feats, net.stage_channels, net.strides):
        assert f.shape == (2, c, -(-h // s), -(-w // s))


def test_channel_mults_out_channels_gate_and_coord_conv():
    net = ResNetBackbone(base_channels=3, blocks_per_stage=(1, 2, 0), channel_mults=(2, 4, 8), coord_conv=True,
                         gate=True, bottleneck=True, out_channels=10, out_gate=True)
    assert net.stage_channels == (6, 12, 10) and net.out_channels == 10
    assert net.stem[0].in_channels == 6  # 4 input + 2 coordinate channels
    assert isinstance(net.head[-1], ChannelGate)
    assert isinstance(net.stages[1][1], GatedResidualStack)
    assert net.stages[1][1].blocks[0].branch[0][0].out_channels == 6  # half width
    feats = net(torch.rand(2, 4, 64, 32))
    assert feats[-1].shape == (2, 10, 4, 2)


def test_pretrained_path_round_trip(tmp_path):
    torch.manual_seed(0)
    src = _tiny()
    src.train()
    src(torch.rand(4, 4, 32, 16))  # move the BN running statistics away from their init
    path = tmp_path / "backbone.pt"
    torch.save(src.state_dict(), path)
    torch.save({"state_dict": src.state_dict()}, tmp_path / "wrapped.pt")
    x = torch.rand(2, 4, 32, 16)
    for p in (path, tmp_path / "wrapped.pt"):
        dst = _tiny(pretrained_path=str(p)).eval()
        for a, b in zip(src.eval()(x), dst(x)):
            assert torch.equal(a, b)


def test_pretrained_path_mismatch_names_the_file(tmp_path):
    path = tmp_path / "other_width.pt"
    torch.save(_tiny(base_channels=8).state_dict(), path)
    with pytest.raises(ValueError, match="other_width.pt"):
        _tiny(pretrained_path=str(path))


@pytest.mark.parametrize("content", [b"not a checkpoint at all", None])
def test_pretrained_path_foreign_or_missing_file_names_the_file(tmp_path, content):
    path = tmp_path / "foreign.bin"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match="foreign.bin"):
        _tiny(pretrained_path=str(path))


def test_pretrained_path_non_state_dict_names_the_file(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(3)], path)
    with pytest.raises(ValueError, match="list.pt"):
        _tiny(pretrained_path=str(path))


@pytest.mark.parametrize("kw,match", [
    (dict(blocks_per_stage=()), "blocks_per_stage"),
    (dict(blocks_per_stage=(1, -1)), "blocks_per_stage"),
    (dict(channel_mults=(1, 2)), "channel_mults"),
    (dict(stem_kernel=4), "stem_kernel"),
    (dict(in_channels=3), "normalize_input"),
    (dict(base_channels=0), "base_channels"),
])
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        _tiny(**kw)


def test_forward_rejects_wrong_channels():
    with pytest.raises(ValueError, match="x must have shape"):
        _tiny()(torch.rand(1, 3, 32, 16))
