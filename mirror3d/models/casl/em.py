"""CASL's two EM loops (Zheng et al. 2022, "3D Magic Mirror": the encoder loop and the
prototype loop), with two corrections of the reference code (marked **bold** below).

Encoder loop: one encoder group trains per step, the others run frozen (no gradients, BN
statistics untouched). Default schedule ``shape | texture | camera`` round robin per step (the
group "texture" covers texture and light, as in the reference); ``all`` trains every encoder
every step (the "No Encoder Loop" ablation). The background encoder and the discriminator
always train.

Prototype loop: every ``every`` epochs until weight averaging starts, the template moves
toward the mean predicted offset over the *clean* subset:

1. δ of every clean sample (eval mode, no grad); samples whose mean |δ| over **all** vertices
   exceeds ``collapse`` are dropped (the reference reads only the last vertex);
2. Δ = Σδ / count with the **correct** count (the reference averages in zero rows); under DDP the
   sum and count are all-reduced across workers first;
3. ``passes`` Laplacian smoothing passes Δ ← Δ + ``smooth``·(L Δ) (3 at 0.5 for em = 7);
4. clip to ±``clip``; template ← template + warm_up·step·Δ; step ← step·``decay``; re-centre.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mirror3d.render.mesh import laplacian_smooth

__all__ = ["EncoderLoopConfig", "EncoderLoop", "PrototypeLoopConfig", "PrototypeLoop",
           "ENCODER_GROUPS"]

#: Encoder groups that take turns; "background" is not among them (it always trains).
ENCODER_GROUPS = ("shape", "texture", "camera")


@dataclass
class EncoderLoopConfig:
    schedule: str = field(default="shape,texture,camera", metadata={
        "help": "comma-separated groups trained in turn, one per step; 'all' trains every encoder "
                "every step (the 'No Encoder Loop' ablation)"})

    def validate(self) -> None:
        EncoderLoop(self.schedule)


class EncoderLoop:
    """Which encoder groups are frozen at a given step."""

    def __init__(self, schedule: str = "shape,texture,camera") -> None:
        if schedule.strip() == "all":
            self.phases: list[tuple[str, ...]] = [ENCODER_GROUPS]
        else:
            phases = []
            for part in schedule.split(","):
                groups = tuple(g for g in part.strip().split("+") if g)
                bad = [g for g in groups if g not in ENCODER_GROUPS]
                if not groups or bad:
                    raise ValueError(f"encoder_loop.schedule: unknown group(s) {bad or part!r} in "
                                     f"{schedule!r}; expected 'all' or groups from {ENCODER_GROUPS} "
                                     "joined by ',' (phases) and '+' (trained together)")
                phases.append(groups)
            self.phases = phases
        self.schedule = schedule

    def trained(self, step: int) -> tuple[str, ...]:
        return self.phases[step % len(self.phases)]

    def frozen(self, step: int) -> set[str]:
        """Groups that run without gradients at ``step``."""
        return set(ENCODER_GROUPS) - set(self.trained(step))


@dataclass
class PrototypeLoopConfig:
    enabled: bool = field(default=True, metadata={
        "help": "false = the 'No Prototype Loop' ablation (the template stays a sphere)"})
    every: int = field(default=2, metadata={"range": (1, 100_000), "help": "em_gap in epochs"})
    step: float = field(default=0.1, metadata={"range": (0.0, None), "help": "initial em_step"})
    decay: float = field(default=0.99, metadata={"range": (0.0, 1.0)})
    smooth: float = field(default=0.5, metadata={"range": (0.0, 1.0)})
    passes: int = field(default=3, metadata={"range": (0, 100)})
    clip: float = field(default=0.05, metadata={"range": (0.0, None)})
    collapse: float = field(default=0.4, metadata={
        "range": (0.0, None), "help": "drop samples whose mean |δ| exceeds this"})


class PrototypeLoop:
    """Template updates. Keeps its step size and update count (saved in checkpoints)."""

    def __init__(self, cfg: PrototypeLoopConfig) -> None:
        self.cfg = cfg
        self.step = cfg.step
        self.updates = 0

    def due(self, epoch: int, averaging_started: bool) -> bool:
        """The reference updates after epochs 0, every, 2·every, … until averaging starts."""
        return self.cfg.enabled and not averaging_started and epoch % self.cfg.every == 0

    def state_dict(self) -> dict:
        return {"step": self.step, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.step = float(state["step"])
        self.updates = int(state["updates"])

    @staticmethod
    def accumulate(delta: torch.Tensor, collapse: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum of non-collapsed offsets and their count.

        Args:
            delta: (B, V, 3) predicted offsets.
        Returns:
            sum (V, 3) and count (scalar tensor).
        """
        keep = delta.abs().mean(dim=(1, 2)) <= collapse
        return delta[keep].sum(0), keep.sum().to(delta.dtype)

    def compute_update(self, delta_sum: torch.Tensor, count: torch.Tensor,
                       laplacian: torch.Tensor) -> torch.Tensor | None:
        """Δ (V, 3) from the (already all-reduced) sum and count: mean, smoothing, clip.
        None when no sample survived the collapse filter."""
        if float(count) <= 0:
            return None
        mean = delta_sum / count
        if self.cfg.passes > 0 and self.cfg.smooth > 0:
            mean = laplacian_smooth(mean, laplacian, alpha=self.cfg.smooth, passes=self.cfg.passes)
        return mean.clamp(-self.cfg.clip, self.cfg.clip)

    def apply(self, template: torch.Tensor, update: torch.Tensor, warm: float) -> torch.Tensor:
        """New template (V, 3): template + warm·step·Δ, re-centred; advances the step size."""
        new = template + warm * self.step * update
        new = new - new.mean(dim=0, keepdim=True)
        self.step *= self.cfg.decay
        self.updates += 1
        return new
