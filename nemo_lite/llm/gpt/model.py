"""GPTModel: the LightningModule of a GPT-family model trained under MegatronStrategy.

It owns what is model-specific: the config (which builds the megatron chunks), the optimizer
module, the tokenizer, and the three steps Megatron's schedule runs per micro-batch
(`data_step`, `forward_step`, the loss reductions). Any of them can be overridden on a
subclass or set on an instance; the strategy looks them up here.
"""

from collections.abc import Iterator
from typing import Any, Optional

import lightning.pytorch as pl
import torch

from nemo_lite.io.capture import IOMixin
from nemo_lite.lightning.optim import MegatronOptimizerModule
from nemo_lite.llm.gpt.config import GPTConfig
from nemo_lite.llm.loss import MaskedTokenLossReduction
from nemo_lite.llm.tokenizer import get_tokenizer


class GPTModel(pl.LightningModule, IOMixin):
    def __init__(
        self,
        config: GPTConfig,
        optim: Optional[MegatronOptimizerModule] = None,
        tokenizer: Any = None,
        model_transform: Any = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.optim = optim or MegatronOptimizerModule()
        # a tokenizer, or a local path / "byte" (what a command line can give)
        self.tokenizer = tokenizer if tokenizer is None or hasattr(tokenizer, "vocab_size") \
            else get_tokenizer(tokenizer)
        self.model_transform = model_transform
        self.module: torch.nn.ModuleList | None = None
        self.training_loss_reduction = MaskedTokenLossReduction()
        self.validation_loss_reduction = MaskedTokenLossReduction(validation_step=True)

    # The per-micro-batch steps (Fiddle-configurable through the config's *_fn fields).
    def data_step(self, dataloader_iter: Iterator[Any]) -> dict[str, Any]:
        return self.config.data_step_fn(dataloader_iter)

    def forward_step(self, model_chunk: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return self.config.forward_step_fn(model_chunk, batch)

    def configure_model(self) -> None:
        """One megatron chunk per virtual-pipeline stage of this rank (called by Lightning)."""
        if self.module is not None:
            return
        from megatron.core import parallel_state

        if self.tokenizer is None and self.config.vocab_size is None:
            datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
            self.tokenizer = getattr(datamodule, "tokenizer", None)
        vp = parallel_state.get_virtual_pipeline_model_parallel_world_size()
        stages = [None] if not vp else list(range(vp))
        self.module = torch.nn.ModuleList(
            [self.config.configure_model(self.tokenizer, vp_stage=stage) for stage in stages]
        )
        if self.model_transform is not None:
            self.model_transform(self)

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.module is None or len(self.module) != 1:
            raise RuntimeError("GPTModel.forward needs a built single-chunk model.")
        return self.module[0](*args, **kwargs)

    # Lightning entry points. Each runs a whole global batch through Megatron's schedule;
    # taking `dataloader_iter` lets the schedule pull its micro-batches itself.
    def training_step(self, dataloader_iter: Iterator[Any]) -> torch.Tensor:
        loss = self.trainer.strategy.megatron_step(
            dataloader_iter, forward_only=False,
            consumed_samples=self._consumed_samples(self.trainer.global_step))
        self.log("reduced_train_loss", loss, prog_bar=True, batch_size=1, sync_dist=False)
        # after this step: what checkpoint names carry (ModelCheckpoint runs after this)
        self.log("consumed_samples", float(self._consumed_samples(self.trainer.global_step + 1)),
                 batch_size=1)
        return loss

    def _consumed_samples(self, global_step: int) -> int:
        data = self.trainer.datamodule
        if data is not None and hasattr(data, "consumed_samples"):
            return data.consumed_samples(global_step)
        return global_step * self.trainer.strategy.global_batch_size

    def validation_step(self, dataloader_iter: Iterator[Any]) -> torch.Tensor:
        loss = self.trainer.strategy.megatron_step(dataloader_iter, forward_only=True)
        self.log("val_loss", loss, prog_bar=True, batch_size=1, sync_dist=False)
        return loss

    def test_step(self, dataloader_iter: Iterator[Any]) -> torch.Tensor:
        loss = self.trainer.strategy.megatron_step(dataloader_iter, forward_only=True)
        self.log("test_loss", loss, batch_size=1, sync_dist=False)
        return loss

    def on_train_start(self) -> None:
        """Rank 0 prints the run summary (every rank takes part: parameter counts are gathered)."""
        from nemo_lite.llm.gpt.summary import run_summary

        self.run_summary = run_summary(self.trainer, self)
        if self.trainer.is_global_zero:
            print("\n".join(self.run_summary.lines()), flush=True)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        optimizer = self.trainer.optimizers[0]
        self.log("lr", optimizer.lr, prog_bar=True, batch_size=1)
        if optimizer.last_grad_norm is not None:
            self.log("grad_norm", optimizer.last_grad_norm, batch_size=1)

    def configure_optimizers(self):
        """Megatron's optimizer over the DDP-wrapped chunks (`trainer.model` under MegatronStrategy)."""
        return self.optim.build(self.trainer.model, self.trainer.max_steps)
