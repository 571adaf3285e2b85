"""benchmarks/gpu_throughput.py without a GPU: its FLOP formula against a hand count and
against torch's FLOP counter on the real megatron model, its parameter count against
llm.count_parameters, the --dry description, and a 3-step tiny CPU run through nemo_lite."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_throughput.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("gpu_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flops_match_a_hand_count(bench):
    """2 layers, h 64, 4 heads of 16 (q 64), 2 KV groups (kv 32), SwiGLU 128, V 512, s 64."""
    config = bench.model_config(bench.parse_args(["--dry", "--tiny"]))
    qkv = 2 * 64 * (64 + 32 + 32)          # 16384: x [64] @ W [64 x 128]
    out = 2 * 64 * 64                      # 8192
    scores = (2 * 64 * 64 + 2 * 64 * 64) / 2  # QK^T and AV over 64 keys, causal half: 8192
    mlp = 2 * 64 * 256 + 2 * 128 * 64      # gate+up [64 x 256], down [128 x 64]: 49152
    logits = 2 * 64 * 512                  # 65536
    forward = 2 * (qkv + out + scores + mlp) + logits
    parts = bench.flops_per_token(config, seq_length=64, vocab_size=512)
    assert parts["total"] == 3 * forward == 688128
    assert parts["attention_scores"] == 3 * 2 * scores and parts["logits"] == 3 * logits


def test_flops_match_torch_flop_counter_on_the_megatron_model(bench):
    """torch counts every matmul the real (CPU) model runs in forward + backward. The CPU
    attention computes all s x s scores and masks half, so it counts the causal half extra."""
    import torch.distributed as dist
    from megatron.core import parallel_state, tensor_parallel
    from torch.utils.flop_counter import FlopCounterMode

    from nemo_lite.lightning import _cpu

    own_group = not dist.is_initialized()
    if own_group:
        dist.init_process_group("gloo", init_method="tcp://127.0.0.1:0", rank=0, world_size=1)
    try:
        parallel_state.initialize_model_parallel(1, 1)
        _cpu.apply()
        tensor_parallel.model_parallel_cuda_manual_seed(1)
        config = bench.model_config(bench.parse_args(["--dry", "--tiny"]))
        model = config.configure_model()
        batch, seq = 2, config.seq_length
        tokens = torch.randint(0, 512, (batch, seq))
        with FlopCounterMode(display=False) as counter:
            loss = model(input_ids=tokens, position_ids=torch.arange(seq).expand(batch, seq),
                         attention_mask=None, labels=tokens)
            loss.float().sum().backward()
        counted = counter.get_total_flops()
    finally:
        parallel_state.destroy_model_parallel()
        if own_group:
            dist.destroy_process_group()
    q = config.num_attention_heads * config.kv_channels
    masked_half = 3 * config.num_layers * 2 * seq * q  # per token, computed then masked on CPU
    per_token = bench.flops_per_token(config, seq, 512)["total"]
    assert counted == (per_token + masked_half) * batch * seq


def test_dry_run_describes_without_a_gpu(bench, capsys):
    from nemo_lite import llm

    out = bench.main(["--dry", "--seq", "4096", "--mbs", "1", "--gbs", "4"])
    info = out["info"]
    assert out["result"] is None
    config = bench.model_config(bench.parse_args(["--dry", "--seq", "4096"]))
    assert info["parameters"] == llm.count_parameters(config)
    assert info["parameters_non_embedding"] == info["parameters"] - 128256 * 2048  # tied
    per_token = bench.flops_per_token(config, 4096, 128256)["total"]
    assert info["flops_per_token"] == per_token
    assert info["flops_per_step"] == per_token * 4 * 4096
    assert info["batch"]["micro_batches_per_gpu"] == 4
    text = capsys.readouterr().out
    assert f"parameters {info['parameters']:,}" in text and "no recompute" in text
    assert "nothing was run" in text


def test_peak_table_by_device_name(bench):
    assert bench.peak_bf16_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert bench.peak_bf16_tflops("NVIDIA H100 PCIe") == 756.0
    assert bench.peak_bf16_tflops("NVIDIA H200") == 989.0
    assert bench.peak_bf16_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert bench.peak_bf16_tflops("Tesla T4") is None


def test_bad_arguments_are_refused(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--gbs", "6", "--mbs", "4"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--tiny"])  # the tiny run is the CPU proof run


def test_tiny_cpu_run_goes_through_nemo_lite(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--json"],
                          capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    out = json.loads(line[len("RESULT "):])
    info, result = out["info"], out["result"]
    assert len(result["losses"]) == 3 and all(0 < x < 10 for x in result["losses"])
    assert result["timed_steps"] == 2 and result["qkv_layer"] == "ColumnParallelLinear"
    mean = result["step_time_mean_s"]
    assert result["tokens_per_s_per_gpu"] == pytest.approx(4 * 64 / mean)
    assert result["model_tflops_per_gpu"] == pytest.approx(info["flops_per_step"] / mean / 1e12)
    assert result["mfu"] is None and "MFU        omitted" in proc.stdout
