"""The GPU path, checked on a CPU machine: fp8/precision validation and the fields written
into megatron's configs, fp8 refused without a GPU + transformer-engine, the TE layer spec
chosen only on CUDA with TE (and called with arguments megatron-core 0.16.1 accepts), and
communication-overlap plans: validation, config writing, and (2 CPU ranks) the DP overlap
giving the same losses plus an exact resume from an overlapped run's checkpoint.

Monkeypatching "a GPU is here" is used only for selection logic; nothing here runs on a GPU.
"""

import dataclasses
import inspect
import json
import os
import signal
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch
from megatron.core.distributed import DistributedDataParallelConfig

from nemo_lite.lightning import device
from nemo_lite.lightning.comm_overlap import (
    AUTO_BUCKET_SIZE,
    CommOverlapError,
    MegatronCommOverlapCallback,
    RunFacts,
    plan_comm_overlap,
)
from nemo_lite.lightning.precision import FP8_RECIPES, MegatronMixedPrecision
from nemo_lite.llm.gpt import layer_specs
from nemo_lite.llm.gpt.config import GPTConfig


def small_config(**kw):
    return GPTConfig(num_layers=4, hidden_size=64, num_attention_heads=4, seq_length=32,
                     vocab_size=512, **kw)


@pytest.fixture
def no_gpu_checks(monkeypatch):
    """Pretend the device checks passed, to test what is written (not whether it runs)."""
    monkeypatch.setattr(MegatronMixedPrecision, "check_fp8_support", lambda self: None)


@pytest.fixture
def fake_gpu(monkeypatch):
    """CUDA + TE present as far as the selection logic can tell (no process group)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(device, "transformer_engine_installed", lambda: True)


# --- precision / fp8 -------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    (dict(fp8="e5m2"), r"fp8='e5m2' is not supported: use one of 'e4m3', 'hybrid'"),
    (dict(fp8="hybrid", fp8_recipe="per_tensor"), r"fp8_recipe='per_tensor' .* 'delayed'"),
    (dict(fp8="hybrid", fp8_amax_compute_algo="mean"), r"fp8_amax_compute_algo='mean'"),
    (dict(fp8="hybrid", fp8_margin=-1), r"fp8_margin=-1: use an integer >= 0"),
    (dict(fp8="hybrid", fp8_amax_history_len=0), r"fp8_amax_history_len=0: use an integer >= 1"),
    (dict(fp8_recipe="delayed"), r"fp8_recipe set without fp8: add fp8='hybrid'"),
    (dict(fp8_param_gather=True), r"fp8_param_gather set without fp8"),
    (dict(fp8="hybrid", fp8_params=True, fp8_param_gather=False), r"conflicting fp8 parameter"),
    (dict(fp8="hybrid", first_last_layers_bf16=True), r"delayed fp8 scaling"),
])
def test_fp8_settings_are_validated_when_built(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MegatronMixedPrecision("bf16-mixed", **kwargs)


@pytest.mark.parametrize("recipe", FP8_RECIPES)
def test_megatron_fp8_recipe_names_are_accepted(recipe):
    assert MegatronMixedPrecision("bf16-mixed", fp8="hybrid", fp8_recipe=recipe).fp8_recipe == recipe
    # the names are megatron-core's own: its TransformerConfig.fp8_recipe Literal lists them
    annotation = str(GPTConfig.__dataclass_fields__["fp8_recipe"].type)
    assert f"'{recipe}'" in annotation


def test_fp8_refused_on_cpu_at_setup_not_at_construction(monkeypatch):
    plugin = MegatronMixedPrecision("bf16-mixed", fp8="hybrid")  # building it is fine anywhere
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as here; GPU hosts too
    with pytest.raises(RuntimeError, match=r"fp8='hybrid' needs a CUDA GPU with "
                                           r"transformer-engine, but this run computes on the CPU"):
        plugin.configure_model(small_config())


def test_fp8_refused_without_transformer_engine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(device, "transformer_engine_installed", lambda: False)
    with pytest.raises(RuntimeError, match=r"needs transformer-engine, which is not installed"):
        MegatronMixedPrecision("bf16-mixed", fp8="e4m3").configure_model(small_config())


@pytest.mark.parametrize("recipe, capability, message", [
    ("delayed", (8, 0), r"compute capability 8\.9 or newer; .* is 8\.0"),
    ("mxfp8", (9, 0), r"fp8_recipe='mxfp8' needs a GPU of compute capability 10\.0"),
])
def test_fp8_needs_a_capable_gpu(fake_gpu, monkeypatch, recipe, capability, message):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Some GPU")
    plugin = MegatronMixedPrecision("bf16-mixed", fp8="hybrid", fp8_recipe=recipe)
    with pytest.raises(RuntimeError, match=message):
        plugin.check_fp8_support()
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (10, 0))
    plugin.check_fp8_support()  # a Blackwell-class capability passes both


def test_fp8_fields_written_into_transformer_config(no_gpu_checks):
    config = small_config(use_cpu_initialization=False)
    assert config.fp8 is None and config.fp8_param is False
    plugin = MegatronMixedPrecision(
        "bf16-mixed", fp8="hybrid", fp8_recipe="tensorwise", fp8_margin=1,
        fp8_amax_history_len=1024, fp8_amax_compute_algo="max", fp8_wgrad=False,
        fp8_dot_product_attention=True, fp8_param_gather=True, first_last_layers_bf16=True,
        num_layers_at_start_in_bf16=1, num_layers_at_end_in_bf16=2)
    plugin.configure_model(config)
    assert (config.bf16, config.fp16, config.params_dtype) == (True, False, torch.bfloat16)
    assert config.fp8 == "hybrid" and config.fp8_recipe == "tensorwise"
    assert (config.fp8_margin, config.fp8_amax_history_len) == (1, 1024)
    assert config.fp8_amax_compute_algo == "max" and config.fp8_wgrad is False
    assert config.fp8_dot_product_attention is True and config.fp8_multi_head_attention is False
    assert config.fp8_param is True and config.first_last_layers_bf16 is True
    assert (config.num_layers_at_start_in_bf16, config.num_layers_at_end_in_bf16) == (1, 2)
    ddp = DistributedDataParallelConfig(use_distributed_optimizer=True)
    plugin.configure_ddp(ddp)
    assert ddp.fp8_param_gather is True and ddp.grad_reduce_in_fp32 is True


def test_fp8_recipe_default_is_megatrons_and_nemo_alias_works(no_gpu_checks):
    config = small_config()
    MegatronMixedPrecision("bf16-mixed", fp8="e4m3").configure_model(config)
    assert config.fp8 == "e4m3" and config.fp8_recipe == "delayed"  # megatron's default kept
    assert MegatronMixedPrecision("bf16-mixed", fp8="hybrid", fp8_params=True).fp8_param_gather


def test_fp8_combinations_refused_on_the_rank(no_gpu_checks):
    plugin = MegatronMixedPrecision("bf16-mixed", fp8="hybrid", fp8_param_gather=True)
    with pytest.raises(ValueError, match=r"use_cpu_initialization=False"):
        plugin.configure_model(small_config())  # GPTConfig initialises on the CPU by default
    with pytest.raises(ValueError, match=r"use_distributed_optimizer=True"):
        plugin.configure_ddp(DistributedDataParallelConfig(use_distributed_optimizer=False))
    wide = MegatronMixedPrecision("bf16-mixed", fp8="hybrid", fp8_recipe="blockwise",
                                  first_last_layers_bf16=True, num_layers_at_start_in_bf16=3)
    config = small_config(pipeline_dtype=torch.bfloat16)
    config.pipeline_model_parallel_size = 2
    with pytest.raises(ValueError, match=r"num_layers_at_start_in_bf16=3: use 0\.\.2"):
        wide.configure_model(config)


def test_bf16_without_fp8_leaves_fp8_off_on_cpu():
    config = small_config()
    MegatronMixedPrecision("bf16-mixed").configure_model(config)
    assert config.bf16 and config.fp8 is None and config.pipeline_dtype == torch.bfloat16


# --- device and layer spec selection ---------------------------------------------------------
def test_te_spec_only_with_cuda_and_te(monkeypatch):
    monkeypatch.setattr(layer_specs, "transformer_engine_layer_spec", lambda c, vp_stage=None: "te")
    monkeypatch.setattr(layer_specs, "local_layer_spec", lambda c, vp_stage=None: "local")
    config = small_config()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert layer_specs.default_layer_spec(config) == "local"  # no CUDA
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(device, "transformer_engine_installed", lambda: False)
    assert layer_specs.default_layer_spec(config) == "local"  # CUDA without TE
    monkeypatch.setattr(device, "transformer_engine_installed", lambda: True)
    assert layer_specs.default_layer_spec(config) == "te"


def test_gloo_group_means_cpu_even_where_cuda_exists(monkeypatch, tmp_path):
    """accelerator='cpu' on a GPU machine: the process group (gloo) decides, not CUDA."""
    import torch.distributed as dist

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(device, "transformer_engine_installed", lambda: True)
    assert device.cuda_in_use() and layer_specs.transformer_engine_available()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        assert not device.cuda_in_use()
        assert device.compute_device() == torch.device("cpu")
        assert not layer_specs.transformer_engine_available()
    finally:
        dist.destroy_process_group()


def test_te_spec_arguments_match_megatron_signature(monkeypatch):
    from megatron.core.models.gpt import gpt_layer_specs

    real = inspect.signature(gpt_layer_specs.get_gpt_layer_with_transformer_engine_spec)
    seen = {}
    monkeypatch.setattr(gpt_layer_specs, "get_gpt_layer_with_transformer_engine_spec",
                        lambda **kw: seen.update(kw) or "spec")
    config = small_config(num_moe_experts=4, moe_grouped_gemm=True, qk_layernorm=True,
                          add_bias_linear=False)
    assert layer_specs.transformer_engine_layer_spec(config) == "spec"
    assert set(seen) <= set(real.parameters), set(seen) - set(real.parameters)
    assert seen["num_experts"] == 4 and seen["moe_grouped_gemm"] is True
    assert seen["qk_layernorm"] is True and "fp8" not in seen  # deprecated in 0.16.1


def test_local_spec_refuses_fp8(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = small_config()
    config.fp8 = "hybrid"
    with pytest.raises(RuntimeError, match=r"fp8='hybrid' needs a CUDA GPU"):
        layer_specs.default_layer_spec(config)


# --- communication overlap -------------------------------------------------------------------
GPU_DP = RunFacts(dp=4, cuda=True, transformer_engine=True, distributed_optimizer=True)


@pytest.mark.parametrize("facts, model, ddp", [
    (GPU_DP, dict(overlap_p2p_comm=False, batch_p2p_comm=False),
     dict(overlap_grad_reduce=True, overlap_param_gather=True, align_param_gather=False,
          bucket_size=AUTO_BUCKET_SIZE)),
    (dataclasses.replace(GPU_DP, pp=2, vpp=2), dict(overlap_p2p_comm=True, batch_p2p_comm=False),
     dict(overlap_grad_reduce=True, overlap_param_gather=True, align_param_gather=True)),
    (dataclasses.replace(GPU_DP, pp=2), dict(overlap_p2p_comm=False, batch_p2p_comm=True),
     dict(align_param_gather=False)),
    (dataclasses.replace(GPU_DP, pp=2, vpp=2, cuda=False),
     dict(overlap_p2p_comm=False, batch_p2p_comm=False), dict(overlap_param_gather=True)),
    (RunFacts(dp=4, cuda=True), dict(tp_comm_overlap=False),
     dict(overlap_grad_reduce=False, overlap_param_gather=False)),
])
def test_automatic_choices_follow_nemo(facts, model, ddp):
    plan = plan_comm_overlap({}, facts)
    assert {k: plan.model[k] for k in model} == model
    assert {k: plan.ddp[k] for k in ddp} == ddp


def test_automatic_keeps_the_strategys_ddp_settings():
    current = dict(overlap_grad_reduce=True, overlap_param_gather=True, align_param_gather=False,
                   bucket_size=None)
    plan = plan_comm_overlap({}, RunFacts(dp=2), current)  # no distributed optimizer
    assert plan.ddp["overlap_grad_reduce"] is True
    assert plan.ddp["overlap_param_gather"] is False  # megatron ignores it without dist-opt
    plan = plan_comm_overlap({"overlap_grad_reduce": False}, RunFacts(dp=2), current)
    assert plan.ddp["overlap_grad_reduce"] is False  # explicit wins


@pytest.mark.parametrize("options, facts, message", [
    (dict(overlap_param_gather=True), RunFacts(dp=2), r"needs the distributed optimizer"),
    (dict(tp_comm_overlap=True), RunFacts(tp=1), r"needs tensor parallelism \(TP=1; needs >= 2\), "
     r"sequence_parallel=True, a CUDA GPU \(this run is on the CPU\), transformer-engine"),
    (dict(tp_comm_overlap=True), RunFacts(tp=2, sequence_parallel=True, cuda=True),
     r"needs transformer-engine \(not installed\): provide"),
    (dict(overlap_p2p_comm=True), RunFacts(cuda=True), r"needs pipeline parallelism \(PP=1"),
    (dict(overlap_p2p_comm=True), RunFacts(pp=2, cuda=True), r"interleaved schedule only"),
    (dict(overlap_p2p_comm=True), RunFacts(pp=2, vpp=2), r"gloo pairs the concurrent sends"),
    (dict(batch_p2p_comm=True), RunFacts(pp=2), r"wrong gradients on CPU ranks"),
    (dict(overlap_p2p_comm=True, batch_p2p_comm=True), RunFacts(pp=2, vpp=2, cuda=True),
     r"exclude each other"),
    (dict(align_param_gather=True), RunFacts(dp=2), r"needs overlap_param_gather=True"),
    (dict(defer_embedding_wgrad_compute=True), RunFacts(), r"needs pipeline parallelism"),
    (dict(defer_embedding_wgrad_compute=True), RunFacts(pp=2, cuda=True),
     r"gradient_accumulation_fusion=True"),
    (dict(wgrad_deferral_limit=2), RunFacts(pp=2, cuda=True),
     r"needs defer_embedding_wgrad_compute=True"),
    (dict(bucket_size=0), GPU_DP, r"bucket_size=0: use a positive number"),
])
def test_impossible_overlaps_are_refused(options, facts, message):
    with pytest.raises(CommOverlapError, match=message):
        plan_comm_overlap(options, facts)


def test_tp_overlap_and_deferral_when_possible():
    facts = RunFacts(tp=2, pp=2, sequence_parallel=True, cuda=True, transformer_engine=True,
                     gradient_accumulation_fusion=True)
    plan = plan_comm_overlap(dict(tp_comm_overlap=True, tp_comm_bootstrap_backend="mpi",
                                  defer_embedding_wgrad_compute=True, wgrad_deferral_limit=3),
                             facts)
    assert plan.model["tp_comm_overlap"] and plan.model["tp_comm_bootstrap_backend"] == "mpi"
    assert plan.model["defer_embedding_wgrad_compute"] and plan.model["wgrad_deferral_limit"] == 3


def test_callback_arguments_checked_when_built():
    with pytest.raises(CommOverlapError, match=r"tp_comm_bootstrap_backend='tcp': use one of"):
        MegatronCommOverlapCallback(tp_comm_bootstrap_backend="tcp")
    with pytest.raises(CommOverlapError, match=r"tp_comm_overlap_cfg must be a dict"):
        MegatronCommOverlapCallback(tp_comm_overlap_cfg=["qkv_fprop"])


def test_callback_writes_model_and_ddp_configs(monkeypatch):
    from nemo_lite.lightning.strategy import MegatronStrategy

    facts = dataclasses.replace(GPU_DP, pp=2, vpp=2)
    monkeypatch.setattr(MegatronCommOverlapCallback, "_facts", staticmethod(lambda s, m: facts))
    strategy = MegatronStrategy(pipeline_model_parallel_size=2,
                                virtual_pipeline_model_parallel_size=2)
    module = SimpleNamespace(config=small_config(pipeline_dtype=torch.float32))
    callback = MegatronCommOverlapCallback(bucket_size=10_000)
    callback.setup(SimpleNamespace(strategy=strategy), module, "fit")
    assert module.config.overlap_p2p_comm is True and module.config.batch_p2p_comm is False
    ddp = strategy.ddp_config
    assert isinstance(ddp, DistributedDataParallelConfig)
    assert (ddp.overlap_grad_reduce, ddp.overlap_param_gather, ddp.align_param_gather) == (
        True, True, True)
    assert ddp.bucket_size == 10_000 and ddp.check_for_nan_in_grad is True  # default kept


def test_tp_overlap_initialises_te_userbuffers_once(monkeypatch):
    """What the callback hands TE (TE itself is absent here: a recording stand-in)."""
    from megatron.core import parallel_state

    from nemo_lite.lightning.strategy import MegatronStrategy

    calls = []
    base = SimpleNamespace(_ub_communicators=None,
                           initialize_ub=lambda **kw: calls.append(kw))
    te_pytorch = SimpleNamespace(module=SimpleNamespace(base=base))
    monkeypatch.setitem(sys.modules, "transformer_engine", SimpleNamespace(pytorch=te_pytorch))
    monkeypatch.setitem(sys.modules, "transformer_engine.pytorch", te_pytorch)
    monkeypatch.setattr(parallel_state, "get_context_parallel_world_size", lambda: 2)
    monkeypatch.setattr(parallel_state, "get_tensor_model_parallel_world_size", lambda: 2)
    facts = RunFacts(tp=2, sequence_parallel=True, cuda=True, transformer_engine=True)
    monkeypatch.setattr(MegatronCommOverlapCallback, "_facts", staticmethod(lambda s, m: facts))
    strategy = MegatronStrategy(tensor_model_parallel_size=2, sequence_parallel=True)
    strategy.seq_length, strategy.micro_batch_size = 128, 2
    module = SimpleNamespace(config=small_config())
    cfg = {"qkv_fprop": {"method": "ring_exchange"}}
    callback = MegatronCommOverlapCallback(tp_comm_overlap=True, tp_comm_overlap_cfg=cfg)
    callback.setup(SimpleNamespace(strategy=strategy), module, "fit")
    assert module.config.tp_comm_overlap is True
    assert calls == [dict(shape=[128 * 2 // 2, 64], tp_size=2, use_fp8=False, ub_cfgs=cfg,
                          bootstrap_backend="nccl")]
    base._ub_communicators = {"qkv_fprop": object()}  # TE now holds them
    callback.setup(SimpleNamespace(strategy=strategy), module, "validate")
    assert len(calls) == 1


def test_callback_needs_megatron_strategy():
    with pytest.raises(CommOverlapError, match=r"needs nl.MegatronStrategy, got"):
        MegatronCommOverlapCallback().setup(SimpleNamespace(strategy=object()), None, "fit")


def test_callback_is_configurable_like_nemo():
    import typing

    import fiddle as fdl

    built = fdl.build(fdl.Config(MegatronCommOverlapCallback, overlap_grad_reduce=True,
                                 bucket_size=1024))
    assert built.options["overlap_grad_reduce"] is True and built.options["bucket_size"] == 1024
    # NeMo-Run parses `callbacks[0].bucket_size=...` by real (not PEP 563 string) annotations
    for cls in (MegatronCommOverlapCallback, MegatronMixedPrecision):
        for name, param in inspect.signature(cls.__init__).parameters.items():
            if name != "self":
                assert not isinstance(param.annotation, str), (cls, name)
    assert typing.get_args(inspect.signature(MegatronCommOverlapCallback).parameters[
        "bucket_size"].annotation) == (int, type(None))


RESUME_SCRIPT = '''
import json, os, sys
import lightning.pytorch as pl
from megatron.core.optimizer import OptimizerConfig
from nemo_lite import lightning as nl
from nemo_lite import llm
from nemo_lite.lightning.comm_overlap import MegatronCommOverlapCallback


class Record(pl.Callback):
    def __init__(self):
        self.losses, self.ddp = {}, None

    def on_train_start(self, trainer, pl_module):
        ddp = trainer.strategy.ddp_config
        self.ddp = {k: getattr(ddp, k) for k in ("overlap_grad_reduce", "overlap_param_gather",
                                                 "bucket_size")}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses[trainer.global_step] = float(outputs["loss"])


def train(work, name, overlap, resume=None, save=True, dist_opt=True):
    record = Record()
    callbacks = [record] + ([MegatronCommOverlapCallback(
        bucket_size=5000, overlap_grad_reduce=True if not dist_opt else None)] if overlap else [])
    trainer = nl.Trainer(
        strategy=nl.MegatronStrategy(), devices=2, accelerator="cpu", max_steps=3,
        limit_val_batches=0, num_sanity_val_steps=0, enable_progress_bar=False,
        enable_model_summary=False, callbacks=callbacks, enable_checkpointing=save,
        plugins=nl.MegatronMixedPrecision("32"))
    config = llm.GPTConfig(num_layers=2, hidden_size=64, num_attention_heads=4, seq_length=32,
                           vocab_size=512, hidden_dropout=0.0, attention_dropout=0.0)
    optim = nl.MegatronOptimizerModule(OptimizerConfig(lr=3e-3, clip_grad=1.0,
                                                       use_distributed_optimizer=dist_opt))
    ckpt = nl.ModelCheckpoint(every_n_train_steps=2, save_top_k=3) if save else None
    log = nl.NeMoLogger(explicit_log_dir=os.path.join(work, name), tensorboard=False, ckpt=ckpt)
    llm.train(llm.GPTModel(config, optim=optim),
              llm.MockDataModule(seq_length=32, global_batch_size=8, micro_batch_size=2),
              trainer, log=log, resume=nl.AutoResume(resume_from_path=resume) if resume else None)
    return record


def main():
    work = sys.argv[1]
    plain = train(work, "plain", overlap=False, save=False)
    overlap = train(work, "overlap", overlap=True)
    ckpts = os.path.join(work, "overlap", "checkpoints")
    step2 = next(os.path.join(ckpts, d) for d in os.listdir(ckpts) if d.startswith("step=2"))
    resumed = train(work, "resumed", overlap=True, resume=step2, save=False)
    allreduce = train(work, "allreduce", overlap=True, save=False, dist_opt=False)
    if int(os.environ["RANK"]) == 0:
        json.dump({"plain": plain.losses, "overlap": overlap.losses, "resumed": resumed.losses,
                   "allreduce": allreduce.losses, "allreduce_ddp": allreduce.ddp,
                   "ddp": overlap.ddp, "plain_ddp": plain.ddp}, open(sys.argv[2], "w"))


if __name__ == "__main__":  # checkpoint writers spawn processes that re-import this file
    main()
'''


@pytest.mark.distributed
def test_dp_overlap_on_cpu_ranks_same_losses_and_exact_resume(tmp_path):
    """DP2 + distributed optimizer: the callback's automatic overlap (grad reduce-scatter,
    param all-gather) trains exactly like no overlap, and a resume from its step-2 checkpoint
    repeats step 3 exactly (without the strategy's param sync before saving it did not: 5e-4
    off). Plain DDP with overlap_grad_reduce=True trains the same too."""
    script = tmp_path / "overlap_resume.py"
    script.write_text(textwrap.dedent(RESUME_SCRIPT))
    out = tmp_path / "out.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
                             "2", "--standalone", str(script), str(tmp_path / "runs"), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=240)
    finally:  # a hung rank must not outlive the test
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, output[-6000:]
    result = json.loads(out.read_text())
    assert result["ddp"] == {"overlap_grad_reduce": True, "overlap_param_gather": True,
                             "bucket_size": 5000}
    assert result["plain_ddp"]["overlap_param_gather"] is False
    assert list(result["overlap"]) == ["1", "2", "3"]
    for step, loss in result["plain"].items():
        assert abs(result["overlap"][step] - loss) <= 1e-6 * abs(loss)
    assert result["resumed"] == {"3": result["overlap"]["3"]}
    # plain DDP (all-reduce) with overlapped, bucketed grad reduction: same losses too
    assert result["allreduce_ddp"] == {"overlap_grad_reduce": True, "overlap_param_gather": False,
                                       "bucket_size": 5000}
    for step, loss in result["plain"].items():
        assert abs(result["allreduce"][step] - loss) <= 1e-6 * abs(loss)
