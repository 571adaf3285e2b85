"""Broken checkpoints fail early with a message naming the path and the problem; nothing runs;
and a good checkpoint's directory alone (its saved context) rebuilds and continues the run.

One single-rank launch (ckpt_errors.py) saves a good checkpoint, tries to resume broken copies
of it through `llm.train` + `AutoResume`, and records what each attempt raised.
"""

from __future__ import annotations

import json

import pytest

from tests._support.ranks import torchrun

pytestmark = pytest.mark.distributed

EXPECTED = {  # case -> words the message must contain
    "missing": ["no such checkpoint"],
    "incomplete": ["incomplete", "interrupted"],
    "no_manifest": ["incomplete", "nemo_lite.json"],
    "truncated": ["truncated", "__0_0.distcp"],
    "corrupt": ["CRC32", "corrupt"],
    "shape": ["do not fit", "shape mismatch", "is [64] in the checkpoint and [32] in this model"],
    "vocab": ["do not fit", "the vocabulary: 512 ids saved, 259 here"],
    "pickle_payload": ["not plain data", "refuses to run code"],
}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    work = tmp_path_factory.mktemp("ckpt_errors")
    out = work / "out.json"
    torchrun(1, "ckpt_errors.py", str(work / "w"), str(out))
    return json.loads(out.read_text())


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_broken_checkpoint_gives_a_clear_error(outcomes, case):
    outcome = outcomes[case]
    assert outcome["error"] == "CheckpointError", outcome
    message = outcome["message"]
    assert outcome["path"] in message, message
    for words in EXPECTED[case]:
        assert words.lower() in message.lower(), (words, message)
    assert "Traceback" not in message


def test_pickled_code_in_a_checkpoint_never_runs(outcomes):
    assert outcomes["pickle_payload"]["marker_exists"] is False


def test_the_good_checkpoint_still_resumes_after_failed_attempts(outcomes):
    assert outcomes["good_after"]["error"] is None


def test_a_checkpoint_directory_alone_rebuilds_and_continues_the_run(outcomes):
    rebuilt, direct = outcomes["from_context"], outcomes["good_after"]["losses"]
    assert rebuilt["model"] == "GPTModel" and rebuilt["hidden_size"] == 64
    assert list(rebuilt["losses"]) == ["3"] and list(direct) == ["3"]
    assert abs(rebuilt["losses"]["3"] - direct["3"]) <= 1e-6 * abs(direct["3"])
