"""Ranks that torchrun restarts in the same job (`--max-restarts`) find each other again.

Under torchrun the ranks' world group meets in the elastic agent's own TCPStore
(TORCHELASTIC_USE_AGENT_STORE). torch 2.13 keeps that one store, at the same port, for every
restart round, and its workers no longer prefix their keys by the round ("we create a new
TCPStore for every retry", says torch.distributed.rendezvous._create_c10d_store). So a restarted
rank could read the addresses the previous round's ranks published, and gloo's connectFullMesh
failed with "Connection refused" (measured: SIGKILL of one rank, `--max-restarts 1`). For the
world group's setup, the store a rank gets is prefixed by TORCHELASTIC_RESTART_COUNT, as torch
did before; every group built later inherits the prefix.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from nemo_lite.lightning.shims import ScopedPatch


def _rendezvous() -> Any:
    import importlib

    # (the module: torch.distributed's attribute of that name is its rendezvous function)
    return importlib.import_module("torch.distributed.rendezvous")


def _prefixed_by_round(original: Callable[..., Any]) -> Callable[..., Any]:
    def create_store(*args: Any, **kwargs: Any) -> Any:
        store = original(*args, **kwargs)
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
            return store  # rank 0 hosts a fresh store: nothing left from an earlier round
        from torch.distributed import PrefixStore

        return PrefixStore(f"/nemo_lite/round_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}",
                           store)

    return create_store


RESTART_ROUND_STORE = ScopedPatch(
    "restart_round_store",
    "torchrun's agent store outlives a restart round and torch 2.13's workers use it "
    "unprefixed: a restarted rank read the last round's gloo addresses (Connection refused). "
    "While the world group is set up, the store is prefixed by TORCHELASTIC_RESTART_COUNT.",
    _rendezvous, "_create_c10d_store", _prefixed_by_round)
