"""The random state of a training loop, kept in its checkpoints so that a resumed run draws the
same random numbers as one that never stopped.

A loop's randomness after its seed is torch's global generator (dropout, the WGAN-GP mix) and
the loop's own ``torch.Generator`` objects (the DataLoader's shuffle, CASL's per-step samples).
Re-seeding them on resume (what a fresh start does) would give the resumed epochs other data
orders and other draws than the run that was interrupted; restoring their states continues it
exactly (on CPU with the same thread count, a resumed run's metrics equal the uninterrupted
run's). Under ``torch.distributed`` every rank has its own states: :func:`gather_rng_states`
collects them all (a collective, every rank calls it) for rank 0's checkpoint, and
:func:`restore_rng_states` gives each rank its own back when the world size is the same (with
another world size the loop keeps its fresh seeds: the data split differs anyway).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["rng_state", "gather_rng_states", "restore_rng_states"]


def rng_state(generators: Sequence[torch.Generator]) -> dict[str, Any]:
    """This process's random state: torch's global CPU generator and ``generators``, in order."""
    return {"torch": torch.get_rng_state(), "generators": [g.get_state() for g in generators]}


def gather_rng_states(generators: Sequence[torch.Generator], rank: int,
                      world_size: int) -> list[dict[str, Any]] | None:
    """Every rank's :func:`rng_state`, in rank order, on rank 0 (None on the others). With
    ``world_size > 1`` this is a collective: every rank must call it at the same point."""
    state = rng_state(generators)
    if world_size <= 1:
        return [state]
    gathered: list | None = [None] * world_size if rank == 0 else None
    torch.distributed.gather_object(state, gathered, dst=0)
    return gathered


def restore_rng_states(states: Sequence[dict[str, Any]] | None,
                       generators: Sequence[torch.Generator], rank: int, world_size: int) -> bool:
    """Set torch's global generator and ``generators`` to this rank's saved state; returns
    whether it did. Nothing is restored (False) from a checkpoint without states (an older
    one), or one written by another world size, or with another number of generators."""
    if not states or len(states) != world_size:
        return False
    mine = states[rank]
    saved = list(mine.get("generators") or [])
    if len(saved) != len(generators):
        return False
    torch.set_rng_state(mine["torch"])
    for g, s in zip(generators, saved):
        g.set_state(s)
    return True
