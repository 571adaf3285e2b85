"""Research prototype for issue 18 (not product code; docs/design/generate.md): greedy generation with megatron-core's own inference stack on CPU.

One process, TP = PP = 1, gloo. A tiny random llama3 HF model (tests/_support/hf_models.py) is
imported with nemo_lite's import_ckpt, loaded into a megatron GPTChunk, wrapped in
  GPTInferenceWrapper + StaticInferenceContext -> TextGenerationController -> StaticInferenceEngine
(legacy static-batch path) and asked for 16 greedy tokens for 3 prompts of different lengths;
the token ids are compared with transformers' generate(do_sample=False, max_new_tokens=16).

Run:  nice -n 19 env OMP_NUM_THREADS=1 .venv/bin/python docs/design/generate_prototype.py
     (also runs unchanged under .venv312/bin/python: megatron-core 0.19.2)
Env knobs: PATCHES=none|all|device,tensor_cuda[,single] (default all; shows what each CPU
redirection is needed for), LEGACY=0 (let StaticInferenceEngine try its dynamic path first: it
fails on CPU and falls back), ATTN=local (megatron builds the [1,1,s,s] mask), EARLY=1 (stop at
the tokenizer's eod like megatron's default; HF runs with eos disabled, so prompt 2 then differs).
"""

from __future__ import annotations

import os
import sys

sys.dont_write_bytecode = True  # nothing written into the checkout
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))  # the checkout: tests/_support

import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(1)
WORK = Path(os.environ.get("GEN_PROTO_WORK", "/tmp/gen_proto/work"))
N_NEW = 16
PROMPTS = ["def function_3(x):", "def f", "    return x * 12 + 5\ndef function_"]
PATCHES = os.environ.get("PATCHES", "all")
from importlib.metadata import version as _version  # noqa: E402

MCORE = _version("megatron-core")
MCORE_019 = tuple(int(x) for x in MCORE.split(".")[:2]) >= (0, 19)


def on(name: str) -> bool:
    return PATCHES == "all" or name in PATCHES.split(",")


# ---------------------------------------------------------------------------------------------
# Tokenizer adapter: megatron's controller calls tokenizer.tokenize(str) -> list[int],
# .detokenize(ids[, skip_special_tokens]) -> str, .eod (padding + termination id), .bos (only
# read by tokenize_prompt; may be None unless add_BOS), .offsets(ids, text) (return_segments only).
# nemo_lite's HFTokenizer has text_to_ids / ids_to_text / eos_id / bos_id instead.
# ---------------------------------------------------------------------------------------------
class MegatronTokenizer:
    def __init__(self, tokenizer):
        self._t = tokenizer

    def tokenize(self, text: str) -> list[int]:
        return self._t.text_to_ids(text)

    def detokenize(self, ids, skip_special_tokens: bool = True) -> str:
        return self._t.ids_to_text(list(ids))

    @property
    def eod(self) -> int:
        return self._t.eos_id

    @property
    def bos(self):
        return self._t.bos_id

    def offsets(self, ids, text):  # only for SamplingParams(return_segments=True)
        out, pos = [], 0
        for i in ids:
            out.append(pos)
            pos += len(self._t.ids_to_text([i]))
        return out


# ---------------------------------------------------------------------------------------------
# CPU redirections for megatron.core.inference (beyond nemo_lite's _cpu.apply()).
# ---------------------------------------------------------------------------------------------
class _TimingEvent:
    """torch.cuda.Event(enable_timing=True) stand-in: record() / synchronize() / elapsed_time()."""

    def __init__(self, *a, **k):
        self.t = None

    def record(self, stream=None):
        self.t = time.perf_counter()

    def synchronize(self):
        pass

    def wait(self, stream=None):
        pass

    def query(self):
        return True

    def elapsed_time(self, end) -> float:  # milliseconds, as CUDA's
        return (end.t - self.t) * 1e3


INFERENCE_MODULES = (
    # torch.cuda.current_device() allocations: pad_input_prompt_tokens, prompt lengths,
    # is_generation_done / generated lengths / log probs buffers, sampling_rng Generator,
    # torch.cuda.Event timing
    "megatron.core.inference.text_generation_controllers.text_generation_controller",
    # dummy_forward, _allocate_recv_buffer (PP only)
    "megatron.core.inference.model_inference_wrappers.abstract_model_inference_wrapper",
    # get_attention_mask: torch.ones(..., device=torch.cuda.current_device())
    "megatron.core.inference.utils",
    # PP / broadcast helpers (PP>1 only): torch.cuda.synchronize, current_device buffers
    "megatron.core.inference.communication_utils",
)


def apply_inference_cpu_patches() -> list[str]:
    import importlib

    from nemo_lite.lightning import _cpu

    applied = []
    if on("device"):
        class _CudaWithTimedEvents(type(_cpu._TORCH_ON_CPU.cuda)):
            Event = _TimingEvent

        class _TorchForInference(type(_cpu._TORCH_ON_CPU)):
            cuda = _CudaWithTimedEvents()

        torch_for_inference = _TorchForInference()
        for name in INFERENCE_MODULES:
            module = importlib.import_module(name)
            if getattr(module, "torch", None) is torch:
                module.torch = torch_for_inference
                applied.append(f"device:{name}")
    if on("tensor_cuda"):
        # text_generation_controller.py: generated_sequence_lengths = torch.zeros(...).cuda()
        tgc = importlib.import_module(
            "megatron.core.inference.text_generation_controllers.text_generation_controller")
        cls = tgc.TextGenerationController
        original = cls.generate_all_output_tokens_static_batch
        if not getattr(original, "__proto__", False):
            def wrapper(self, *a, **k):
                with _cpu._tensor_cuda_is_identity():
                    return original(self, *a, **k)
            wrapper.__proto__ = True
            cls.generate_all_output_tokens_static_batch = wrapper
            applied.append("tensor_cuda:TextGenerationController."
                           "generate_all_output_tokens_static_batch")
    return applied


# ---------------------------------------------------------------------------------------------
def make_checkpoint():
    from nemo_lite.llm.hf import import_ckpt
    from tests._support.hf_models import tiny_model

    WORK.mkdir(parents=True, exist_ok=True)
    source = tiny_model(WORK, "llama3")
    ckpt = WORK / "llama3.nemo"
    if not ckpt.exists():
        import_ckpt(source=f"hf://{source}", output_path=str(ckpt))
    return source, ckpt


def megatron_generate(ckpt: Path, prompts: list[str], n_new: int, batched: bool = True):
    from megatron.core import parallel_state
    from megatron.core.inference.contexts import StaticInferenceContext
    from megatron.core.inference.engines import StaticInferenceEngine
    from megatron.core.inference.model_inference_wrappers.gpt.gpt_inference_wrapper import (
        GPTInferenceWrapper,
    )
    if not MCORE_019:
        from megatron.core.inference.model_inference_wrappers.inference_wrapper_config import (
            InferenceWrapperConfig,
        )
    from megatron.core.inference.sampling_params import SamplingParams
    from megatron.core.inference.text_generation_controllers.text_generation_controller import (
        TextGenerationController,
    )

    from nemo_lite.io import load_context
    from nemo_lite.lightning.checkpoint_io import load_model_weights
    from nemo_lite.llm.hf.convert import single_rank

    config = load_context(ckpt, subpath="model.config")
    tokenizer = load_context(ckpt, subpath="model.tokenizer")  # nemo_lite HFTokenizer
    with single_rank():  # gloo world of 1, parallel_state TP=PP=1, _cpu.apply()
        print("patches:", apply_inference_cpu_patches())
        if os.environ.get("ATTN"):
            from megatron.core.transformer.enums import AttnBackend
            config.attention_backend = AttnBackend[os.environ["ATTN"]]
        chunk = config.configure_model()
        load_model_weights([chunk], ckpt)
        chunk.eval()
        padded = chunk.output_layer.weight.shape[0]
        print(f"vocab {config.vocab_size} padded to {padded}; model dtype {config.params_dtype}; "
              f"attention_backend {config.attention_backend}")
        if MCORE_019:
            # 0.19: no InferenceWrapperConfig; the wrapper takes (model, context) only (passing
            # inference_wrapper_config= raises TypeError), padded vocab = model.vocab_size,
            # limits live on the StaticInferenceContext, the controller has no pp_group arg.
            context = StaticInferenceContext(max_batch_size=8, max_sequence_length=128)
            wrapped = GPTInferenceWrapper(chunk, context)
            controller = TextGenerationController(wrapped, MegatronTokenizer(tokenizer))
        else:
            wrapper_config = InferenceWrapperConfig(
                hidden_size=config.hidden_size,
                params_dtype=config.params_dtype,
                inference_batch_times_seqlen_threshold=-1,  # PP micro-batching off
                padded_vocab_size=padded,
                inference_max_requests=8,
                inference_max_seq_length=128,
            )
            context = StaticInferenceContext.from_config(wrapper_config)
            wrapped = GPTInferenceWrapper(chunk, wrapper_config, context)
            controller = TextGenerationController(wrapped, MegatronTokenizer(tokenizer))
        # legacy=True: 0.16.1's default (legacy=False) builds a DynamicInferenceContext (CUDA
        # only); on failure it warns and falls back to this same legacy path.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            engine = StaticInferenceEngine(controller, max_batch_size=8,
                                           legacy=os.environ.get("LEGACY", "1") == "1")
        print("engine legacy (static batch) path:", engine.legacy)
        params = SamplingParams(top_k=1, num_tokens_to_generate=n_new, return_log_probs=False)
        # greedy: top_k == 1 -> argmax. Generate exactly n_new (no stop on eod), like HF with
        # eos disabled:
        if os.environ.get("EARLY") != "1":
            params.add_attributes({"no_early_termination": True})
        outputs = []
        t0 = time.perf_counter()
        groups = [prompts] if batched else [[p] for p in prompts]
        for group in groups:
            results = engine.generate(prompts=group, sampling_params=params)
            for r in results:
                outputs.append((list(r.prompt_tokens), r.generated_tokens.tolist(),
                                r.generated_text))
        print(f"megatron generate ({'batched' if batched else 'one by one'}): "
              f"{time.perf_counter() - t0:.2f}s")
        parallel_state.destroy_model_parallel()
    return outputs


def hf_generate(source: Path, prompt_ids: list[list[int]], n_new: int, pad_id: int):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(source).eval()
    model.generation_config.eos_token_id = None  # exactly n_new tokens, as megatron's side
    model.generation_config.pad_token_id = pad_id
    one_by_one = []
    with torch.no_grad():
        for ids in prompt_ids:
            x = torch.tensor([ids])
            out = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False,
                                 max_new_tokens=n_new)
            one_by_one.append(out[0, len(ids):].tolist())
        # batched, left-padded
        width = max(map(len, prompt_ids))
        x = torch.tensor([[pad_id] * (width - len(i)) + i for i in prompt_ids])
        mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in prompt_ids])
        out = model.generate(x, attention_mask=mask, do_sample=False, max_new_tokens=n_new)
        batched = [row[width:].tolist() for row in out]
        # manual greedy without KV cache (full recompute), reference of the reference
        manual = []
        for ids in prompt_ids:
            seq = list(ids)
            for _ in range(n_new):
                logits = model(torch.tensor([seq]), use_cache=False).logits[0, -1]
                seq.append(int(logits.argmax()))
            manual.append(seq[len(ids):])
    return one_by_one, batched, manual


def main() -> int:
    t0 = time.perf_counter()
    source, ckpt = make_checkpoint()
    print(f"megatron-core {MCORE}, torch {torch.__version__}")
    print(f"checkpoint ready {time.perf_counter() - t0:.1f}s: {ckpt}")
    ours = megatron_generate(ckpt, PROMPTS, N_NEW, batched=True)
    ours_single = megatron_generate(ckpt, PROMPTS, N_NEW, batched=False) if on("single") else None
    prompt_ids = [p for p, _, _ in ours]
    from nemo_lite.io import load_context

    pad = load_context(ckpt, subpath="model.tokenizer").eos_id
    hf_one, hf_batch, hf_manual = hf_generate(source, prompt_ids, N_NEW, pad)
    ok = True
    for i, (p, gen, text) in enumerate(ours):
        print(f"prompt {i} ({len(p)} tokens) {p}")
        print(f"  megatron batched   {gen}  {text!r}")
        if ours_single:
            print(f"  megatron alone     {ours_single[i][1]}")
        print(f"  hf generate alone  {hf_one[i]}")
        print(f"  hf generate batch  {hf_batch[i]}")
        print(f"  hf manual no-cache {hf_manual[i]}")
        same = gen == hf_one[i] == hf_batch[i] == hf_manual[i]
        if ours_single:
            same = same and ours_single[i][1] == gen
        print(f"  equal: {same}")
        ok &= same
    print("ALL EQUAL" if ok else "MISMATCH", f"({time.perf_counter() - t0:.1f}s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
