"""lm-eval-harness's `LM` interface over a nemo_lite generator (`llm.load_generator`).

`TemplateLM` (lm-eval's own base, the one its `hf` backend uses) splits context and continuation
and turns requests into token lists; this class scores them the way the `hf` backend does, so the
same model gives the same numbers through either:

* `_loglikelihood_tokens`: (context + continuation)[-(max_length + 1):][:-1] is fed once (a full
  forward, no cache); the continuation's log-probabilities are summed, and `is_greedy` says
  whether argmax would have produced it. Rows of a batch are right-padded (a causal model's
  logits at a position do not see what follows).
* `loglikelihood_rolling`: lm-eval's rolling windows (`get_rolling_token_windows`,
  `make_disjoint_window`) over the whole text, each token predicted once.
* `generate_until`: megatron's engine through `Generator.generate` (greedy unless the task
  samples), ending at the task's `until` strings; the context is cut on the left to leave room.
"""

from __future__ import annotations

from typing import Any

import torch
from lm_eval.api.model import TemplateLM
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from nemo_lite.llm.inference.prompts import Prompt


class NemoLiteLM(TemplateLM):
    """lm-eval's model interface for a loaded nemo_lite checkpoint."""

    def __init__(self, generator: Any, tokenizer: Any, max_length: int, batch_size: int = 8):
        super().__init__()
        self.generator, self.text_tokenizer = generator, tokenizer
        self._max_length, self.batch_size = max_length, batch_size

    @property
    def eot_token_id(self) -> int:
        return self.text_tokenizer.eos_id

    @property
    def prefix_token_id(self) -> int:  # as lm-eval's hf backend: BOS if the tokenizer has one
        bos = getattr(self.text_tokenizer, "bos_id", None)
        return self.eot_token_id if bos is None else bos

    @property
    def max_length(self) -> int:
        return self._max_length

    def tok_encode(self, string: str, **kwargs: Any) -> list[int]:
        return list(self.text_tokenizer.text_to_ids(string))

    def _loglikelihood_tokens(self, requests: list, disable_tqdm: bool = False,
                              **kwargs: Any) -> list[tuple[float, bool]]:
        results = []
        for start in range(0, len(requests), self.batch_size):
            batch = requests[start:start + self.batch_size]
            rows = [(context + continuation)[-(self.max_length + 1):]
                    for _, context, continuation in batch]
            width = max(len(row) - 1 for row in rows)
            tokens = torch.full((len(rows), width), self.eot_token_id, dtype=torch.long)
            for i, row in enumerate(rows):
                tokens[i, :len(row) - 1] = torch.tensor(row[:-1])
            log_probs = torch.log_softmax(self.generator.logits(tokens), dim=-1)
            for i, ((key, _, continuation), row) in enumerate(zip(batch, rows, strict=True)):
                fed, count = len(row) - 1, len(continuation)
                scores = log_probs[i, fed - count:fed]
                target = torch.tensor(row[-count:])
                answer = (float(scores.gather(1, target.unsqueeze(1)).sum()),
                          bool((scores.argmax(-1) == target).all()))
                results.append(answer)
                if key is not None:
                    self.cache_hook.add_partial("loglikelihood", key, answer)
        return results

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
        out = []
        for (text,) in [request.args for request in requests]:
            windows = [(None, *window) for window in map(make_disjoint_window,
                       get_rolling_token_windows(token_list=self.tok_encode(text),
                                                 prefix_token=self.prefix_token_id,
                                                 max_seq_len=self.max_length, context_len=1))]
            total = sum(score for score, _ in self._loglikelihood_tokens(windows))
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
            out.append(total)
        return out

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        from megatron.core.inference.sampling_params import SamplingParams

        out = []
        for context, settings in [request.args for request in requests]:
            until = settings.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            new = int(settings.get("max_gen_toks", 256))
            sampled = settings.get("do_sample", False) and settings.get("temperature", 1.0) > 0
            params = SamplingParams(
                top_k=0 if sampled else 1, temperature=float(settings.get("temperature", 1.0))
                if sampled else 1.0, num_tokens_to_generate=new, stop_words=until or None)
            ids = self.tok_encode(context)[-(self.generator.max_sequence_length - new):]
            prompt = Prompt(self.text_tokenizer.ids_to_text(ids), ids)  # these ids, as hf's
            text = self.generator.generate([prompt], params)[0]
            out.append(text.generated_text)
            self.cache_hook.add_partial("generate_until", (context, settings), out[-1])
        return out
