"""llm.evaluate through lm-eval-harness, checked against lm-eval's own `hf` backend on the
exported model: the same loglikelihoods (1e-4), the same greedy generations, the same accuracy on
the shipped multiple-choice task (exactly) and the same perplexity on the shipped docs task."""

from __future__ import annotations

import pytest

MC, PPL = "nemo_lite_stdlib_next_line", "nemo_lite_stdlib_docs"


@pytest.fixture(scope="module")
def models(imported, tmp_path_factory):
    """(nemo_lite checkpoint, its Hugging Face export) of a tiny random Llama."""
    from nemo_lite import llm

    work = tmp_path_factory.mktemp("evaluate")
    _, ckpt = imported["llama3"]
    exported = llm.export_ckpt(str(ckpt), target="hf", output_path=str(work / "exported"))
    return ckpt, exported


def hf_backend(exported):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(exported), dtype="float32", device="cpu", batch_size=4)


def test_the_adapter_scores_and_generates_as_lm_evals_hf_backend(models):
    from lm_eval.api.instance import Instance

    from nemo_lite.llm.evaluation.lm import NemoLiteLM
    from nemo_lite.llm.inference.checks import saved_tokenizer
    from nemo_lite.llm.inference.generator import load_generator

    ckpt, exported = models
    pairs = [("def f(x):\n", "    return x"), ("", "import os"), ("class A:", " pass"),
             ("x = [1, 2", ", 3]")]
    scored = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    rolling = [Instance("loglikelihood_rolling", {}, (text,), i)
               for i, text in enumerate(["a short text", "def g():\n    return 1\n" * 8])]
    asked = [Instance("generate_until", {}, (context, {"until": ["\n"], "max_gen_toks": 10}), i)
             for i, context in enumerate(["def f(x):", "import"])]
    theirs = hf_backend(exported)
    with load_generator(ckpt) as generator:
        ours = NemoLiteLM(generator, saved_tokenizer(ckpt), generator.max_sequence_length, 4)
        for method, requests in (("loglikelihood", scored), ("loglikelihood_rolling", rolling)):
            a, b = getattr(ours, method)(requests), getattr(theirs, method)(requests)
            flat = [x[0] if isinstance(x, tuple) else x for x in a], \
                [x[0] if isinstance(x, tuple) else x for x in b]
            assert max(abs(x - y) for x, y in zip(*flat, strict=True)) <= 1e-4, (method, a, b)
            if method == "loglikelihood":
                assert [x[1] for x in a] == [x[1] for x in b]  # is_greedy
        generated = ours.generate_until(asked)
        assert generated == theirs.generate_until(asked) and any(generated), generated


def test_accuracy_and_perplexity_equal_lm_evals_hf_backend(models, tmp_path):
    import json

    import lm_eval

    from nemo_lite import llm
    from nemo_lite.llm.evaluation.evaluate import local_task_manager

    ckpt, exported = models
    ours = llm.evaluate(path=str(ckpt), tasks=[MC, PPL], limit=40,
                        output_path=str(tmp_path / "results.json"))
    theirs = lm_eval.simple_evaluate(
        model=hf_backend(exported), tasks=[MC, PPL], task_manager=local_task_manager(),
        limit=40, random_seed=1234, numpy_random_seed=1234, torch_random_seed=1234,
        fewshot_random_seed=1234)
    assert ours["results"][MC]["acc,none"] == theirs["results"][MC]["acc,none"]
    assert ours["results"][MC]["sample_len"] == 40
    for metric in ("byte_perplexity,none", "bits_per_byte,none"):
        a, b = ours["results"][PPL][metric], theirs["results"][PPL][metric]
        assert abs(a - b) <= 1e-4 * abs(b), (metric, a, b)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["results"][MC]["acc,none"] == ours["results"][MC]["acc,none"]


def test_two_tensor_parallel_ranks_score_as_one(models, tmp_path):
    """TP2 on 2 CPU ranks: the same accuracy and (1e-4) perplexity as one rank; rank 0 writes
    the json. Pipeline parallelism and repeating data-parallel replicas are refused."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from nemo_lite import lightning as nl
    from nemo_lite import llm
    from nemo_lite.llm.evaluation.evaluate import EvaluateError

    ckpt, _ = models
    out = tmp_path / "tp2.json"
    script = Path(__file__).parent / "scripts" / "evaluate_run.py"
    proc = subprocess.run([sys.executable, str(script), str(ckpt), str(out),
                           json.dumps([MC, PPL]), "20"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads(out.read_text())["results"]
    one = llm.evaluate(path=str(ckpt), tasks=[MC, PPL], limit=20)["results"]
    assert two[MC]["acc,none"] == one[MC]["acc,none"] and two[MC]["sample_len"] == 20
    a, b = two[PPL]["byte_perplexity,none"], one[PPL]["byte_perplexity,none"]
    assert abs(a - b) <= 1e-4 * b, (a, b)
    for strategy, words in ((nl.MegatronStrategy(pipeline_model_parallel_size=2),
                             "pipeline_model_parallel_size=2"),
                            (nl.MegatronStrategy(), "2 data-parallel replicas")):
        trainer = nl.Trainer(devices=2, accelerator="cpu", strategy=strategy)
        with pytest.raises(EvaluateError, match=words):
            llm.evaluate(path=str(ckpt), tasks=[MC], trainer=trainer)


def test_unknown_task_lists_the_local_ones(models, tmp_path):
    from nemo_lite import llm
    from nemo_lite.llm.evaluation.evaluate import EvaluateError

    ckpt, _ = models
    with pytest.raises(EvaluateError, match=f"unknown task hellaswag: the local tasks are .*{MC}"):
        llm.evaluate(path=str(ckpt), tasks=["hellaswag"])
    with pytest.raises(EvaluateError, match="include_path=/no/dir: no such directory"):
        llm.evaluate(path=str(ckpt), tasks=[MC], include_path=["/no/dir"])


def test_the_cli_prints_the_table_and_writes_the_json(models, tmp_path):
    import json

    from nemo_lite import llm
    from tests.cli.test_cli import cli

    ckpt, _ = models
    proc = cli("llm", "evaluate", f"path={ckpt}", f'tasks=["{MC}"]', "limit=10",
               "output_path=r.json", "-y", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert MC in proc.stdout and "acc" in proc.stdout  # lm-eval's table
    saved = json.loads((tmp_path / "r.json").read_text())
    expected = llm.evaluate(path=str(ckpt), tasks=[MC], limit=10)
    assert saved["results"][MC]["acc,none"] == expected["results"][MC]["acc,none"]
    bad = cli("llm", "evaluate", f"path={ckpt}", 'tasks=["hellaswag"]', "-y", cwd=tmp_path)
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode == 2 and len(lines) == 1 and "unknown task hellaswag" in lines[0], \
        bad.stderr[-2000:]


def test_a_users_task_directory_runs(models, tmp_path):
    """include_path=[DIR]: lm-eval task YAML over a local jsonl (datasets' json loader, an
    absolute data_files path), as the README documents."""
    import json

    from nemo_lite import llm

    ckpt, _ = models
    rows = [{"q": f"x = {i} +", "choices": [f" {i}", " banana"], "gold": 0} for i in range(6)]
    (tmp_path / "mine.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "mine.yaml").write_text(
        "task: my_local_task\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {tmp_path / 'mine.jsonl'}\noutput_type: multiple_choice\ntest_split: test\n"
        "doc_to_text: '{{q}}'\ndoc_to_choice: '{{choices}}'\ndoc_to_target: '{{gold}}'\n"
        "metric_list:\n  - metric: acc\nmetadata:\n  version: 1.0\n")
    results = llm.evaluate(path=str(ckpt), tasks=["my_local_task"],
                           include_path=[str(tmp_path / "tasks")])
    assert results["results"]["my_local_task"]["sample_len"] == 6
    assert 0.0 <= results["results"]["my_local_task"]["acc,none"] <= 1.0
