import pytest
import torch

from mirror3d.models.casl.em import (EncoderLoop, PrototypeLoop, PrototypeLoopConfig)
from mirror3d.render import template_mesh
from mirror3d.render.mesh import uniform_laplacian


def test_round_robin_schedule_and_all():
    loop = EncoderLoop("shape,texture,camera")
    assert [loop.trained(s) for s in range(4)] == [("shape",), ("texture",), ("camera",), ("shape",)]
    assert loop.frozen(1) == {"shape", "camera"}
    assert EncoderLoop("all").frozen(7) == set()
    assert EncoderLoop("shape+texture,camera").frozen(0) == {"camera"}
    with pytest.raises(ValueError, match="encoder_loop.schedule"):
        EncoderLoop("shape,light")


def test_accumulate_uses_the_correct_count_and_all_vertices():
    delta = torch.zeros(4, 5, 3)
    delta[0] = 0.1
    delta[1] = 0.3
    delta[2, :, :] = 0.0
    delta[2, -1] = 10.0  # a collapse hidden from a last-vertex-only check? mean |δ| = 10/5·1/1
    delta[3, :4] = 0.9   # collapsed on every vertex but the last: the reference would keep it
    s, n = PrototypeLoop.accumulate(delta, collapse=0.4)
    # sample 2: mean |δ| = 10·3/(5·3) = 2 > 0.4 → dropped; sample 3: 0.72 → dropped
    assert n.item() == 2
    assert torch.allclose(s / n, torch.full((5, 3), 0.2))


def test_update_smooths_clips_steps_and_recentres():
    verts, faces, _ = template_mesh()
    L = uniform_laplacian(verts.shape[0], faces)
    loop = PrototypeLoop(PrototypeLoopConfig(step=0.1, decay=0.99, clip=0.05, passes=3, smooth=0.5))
    g = torch.Generator().manual_seed(0)
    delta = 0.2 * torch.randn(6, verts.shape[0], 3, generator=g)
    s, n = loop.accumulate(delta, collapse=0.4)
    upd = loop.compute_update(s, n, L)
    assert upd.abs().max() <= 0.05 + 1e-7
    # smoothing reduces roughness: |L Δ| smaller than for the raw mean
    raw = (s / n).clamp(-0.05, 0.05)
    assert (L @ upd).abs().mean() < (L @ raw).abs().mean()
    new = loop.apply(verts, upd, warm=0.5)
    assert torch.allclose(new.mean(0), torch.zeros(3), atol=1e-6)
    moved = (new - verts) - (new - verts).mean(0)
    assert moved.abs().max() <= 0.5 * 0.1 * 0.05 * 2 + 1e-6
    assert loop.step == pytest.approx(0.099) and loop.updates == 1
    state = loop.state_dict()
    other = PrototypeLoop(PrototypeLoopConfig())
    other.load_state_dict(state)
    assert other.step == pytest.approx(0.099) and other.updates == 1


def test_no_survivors_gives_no_update_and_due_schedule():
    loop = PrototypeLoop(PrototypeLoopConfig(every=2))
    s, n = loop.accumulate(torch.ones(3, 4, 3), collapse=0.4)
    assert loop.compute_update(s, n, torch.zeros(4, 4)) is None
    assert [loop.due(e, False) for e in range(5)] == [True, False, True, False, True]
    assert not loop.due(4, True)
    assert not PrototypeLoop(PrototypeLoopConfig(enabled=False)).due(0, False)


def test_compute_update_by_hand():
    """Three kept samples on a one-triangle mesh: the update is their mean (sum / 3, not / 4),
    smoothed by x ← x + α·(neighbour mean − x) and clipped, all computed here by hand."""
    faces = torch.tensor([[0, 1, 2]])
    L = uniform_laplacian(3, faces)
    d1 = torch.tensor([[0.3, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    d2 = torch.tensor([[0.3, 0.0, 0.0], [0.0, 0.3, 0.0], [0.0, 0.0, 0.0]])
    d3 = torch.tensor([[0.3, 0.0, 0.0], [0.0, 0.3, 0.0], [0.0, 0.0, 0.6]])
    s, n = PrototypeLoop.accumulate(torch.stack([d1, d2, d3]), collapse=0.4)
    assert n.item() == 3
    # no smoothing, no effective clip: the plain mean
    plain = PrototypeLoop(PrototypeLoopConfig(passes=0, clip=1.0)).compute_update(s, n, L)
    mean = torch.tensor([[0.3, 0.0, 0.0], [0.0, 0.2, 0.0], [0.0, 0.0, 0.2]])
    assert torch.allclose(plain, mean, atol=1e-7)
    # one pass at α = 0.5: x_v ← 0.5·x_v + 0.25·(x_u + x_w); then clip to ±0.12
    loop = PrototypeLoop(PrototypeLoopConfig(passes=1, smooth=0.5, clip=0.12, step=0.1))
    upd = loop.compute_update(s, n, L)
    want = torch.tensor([[0.12, 0.05, 0.05],      # 0.15 clipped to 0.12
                         [0.075, 0.1, 0.05],
                         [0.075, 0.05, 0.1]])
    assert torch.allclose(upd, want, atol=1e-7)
    # apply: template + warm·step·Δ, re-centred
    new = loop.apply(torch.zeros(3, 3), upd, warm=0.5)
    moved = 0.05 * want
    assert torch.allclose(new, moved - moved.mean(0), atol=1e-8)
