"""DoRA (weight-decomposed low-rank adaptation): NeMo 2.0's `llm.peft.DoRA`, as a model transform.

DoRA writes each adapted weight as a magnitude times a direction,

    W' = m * (W + scale * B @ A) / ||W + scale * B @ A||     (norms per output row)

and trains m with the LoRA pair (Liu et al., 2024; Hugging Face PEFT's `use_dora=True`). It
configures and applies like `LoRA` (same targets, rank, alpha, dropout on the adapter's input,
seeds, TP / SP / PP / EP layouts, trainable-only checkpoints, `merge`, `merge_lora`,
`export_lora`); `dora_layers.py` holds the layers. As in the paper and PEFT, the norm is taken
out of the gradient (it scales the output but is not differentiated).

This module stays free of torch / megatron imports at load time (recipes configure `DoRA`).
"""

from nemo_lite.llm.peft.lora import LoRA


class DoRA(LoRA):
    """LoRA with a trained per-row magnitude: the model starts equal to the base (m = ||W||,
    B = 0); `merge` folds m, B and A into W exactly."""

    def layer_classes(self) -> tuple[type, type]:
        from nemo_lite.llm.peft.dora_layers import DoRAAdapter, DoRALinear

        return DoRAAdapter, DoRALinear
