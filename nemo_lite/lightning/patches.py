"""Every patch nemo_lite makes to torch, megatron-core or Lightning, listed in one place.

- Permanent, CPU runs only (MegatronStrategy installs them when a rank computes on the CPU):
  `_cpu.SHIMS` (CUDA assumptions of megatron-core redirected to the CPU) and
  `_cpu_moe.MOE_SHIMS` (the Mixture-of-Experts ones); `_cpu_inference.INFERENCE_SHIMS` (megatron's
  inference engine, installed by `llm.generate` when it computes on the CPU).
- Permanent, in the process that Lightning's launcher runs as rank 0 (RankWatchdog installs it):
  `launcher_cleanup.LAUNCHER_KILLS_ITS_TREE` (no orphans when a rank dies).
- Permanent, in every rank (MegatronStrategy's setup of megatron's parallel state):
  `writer_queue.CHECKPOINT_RESULTS_QUEUE_FORKED` (the first save starts 3 s sooner).
- Permanent, in every process that imports nemo_lite.lightning before torchmetrics:
  `torchmetrics_imports.TORCHMETRICS_WITHOUT_TRANSFORMERS` (Lightning loads ~1.5 s faster).
- Scoped, for one call: `checkpoint_io.WEIGHTS_ONLY_OBJECTS` and
  `threaded_reads.THREADED_READS` (each checkpoint load),
  `optim.ADAM_STEP_LOADED_SEPARATELY` (each distributed-optimizer state load), and
  `elastic_store.RESTART_ROUND_STORE` (the world group's setup under torchrun).

Not patches, listed so nothing is missed: `quiet.py` filters library messages by their text (log
records on the emitting loggers, warnings by message); `trainer.py` gives nemo_lite's own
`Trainer.__init__` the signature of Lightning's, so Fiddle and NeMo-Run see its arguments;
`mcore_compat.py` calls megatron's differing APIs the way each release wants.
tests/unit/test_patches.py checks that no other module assigns to torch, megatron or Lightning.
"""

from __future__ import annotations

from nemo_lite.lightning.shims import ScopedPatch, Shim


def permanent() -> tuple[Shim, ...]:
    from nemo_lite.lightning._cpu import SHIMS
    from nemo_lite.lightning._cpu_inference import INFERENCE_SHIMS
    from nemo_lite.lightning._cpu_moe import MOE_SHIMS
    from nemo_lite.lightning.launcher_cleanup import LAUNCHER_KILLS_ITS_TREE
    from nemo_lite.lightning.torchmetrics_imports import TORCHMETRICS_WITHOUT_TRANSFORMERS
    from nemo_lite.lightning.writer_queue import CHECKPOINT_RESULTS_QUEUE_FORKED

    return SHIMS + MOE_SHIMS + INFERENCE_SHIMS + (LAUNCHER_KILLS_ITS_TREE,
                                                  TORCHMETRICS_WITHOUT_TRANSFORMERS,
                                                  CHECKPOINT_RESULTS_QUEUE_FORKED)


def scoped() -> tuple[ScopedPatch, ...]:
    from nemo_lite.lightning.checkpoint_io import WEIGHTS_ONLY_OBJECTS
    from nemo_lite.lightning.elastic_store import RESTART_ROUND_STORE
    from nemo_lite.lightning.optim import ADAM_STEP_LOADED_SEPARATELY
    from nemo_lite.lightning.threaded_reads import THREADED_READS

    return (WEIGHTS_ONLY_OBJECTS, THREADED_READS, ADAM_STEP_LOADED_SEPARATELY,
            RESTART_ROUND_STORE)
