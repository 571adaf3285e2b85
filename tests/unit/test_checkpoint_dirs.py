"""Picking and checking checkpoint directories: pure filesystem logic, real files."""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import pytest

from nemo_lite.lightning.checkpoint_io import (
    MANIFEST,
    CheckpointError,
    MegatronCheckpointIO,
    find_latest_checkpoint,
)
from nemo_lite.lightning.nemo_logger import NeMoLogger
from nemo_lite.lightning.resume import AutoResume, remove_incomplete


def fake_checkpoint(root: Path, name: str, step: int, payload: bytes = b"x" * 64) -> Path:
    """A directory laid out as MegatronCheckpointIO commits one (weights + manifest)."""
    path = root / name
    (path / "weights").mkdir(parents=True)
    (path / "weights" / "__0_0.distcp").write_bytes(payload)
    files = {"__0_0.distcp": {"bytes": len(payload), "crc32": zlib.crc32(payload)}}
    (path / MANIFEST).write_text(json.dumps({"step": step, "saved_at": 0.0, "files": files}))
    return path


def test_latest_is_the_highest_complete_step(tmp_path):
    fake_checkpoint(tmp_path, "step=2", 2)
    fake_checkpoint(tmp_path, "step=10", 10)
    fake_checkpoint(tmp_path, "step=4", 4)
    fake_checkpoint(tmp_path, "step=12.incomplete", 12)  # interrupted save
    no_manifest = fake_checkpoint(tmp_path, "step=14", 14)
    (no_manifest / MANIFEST).unlink()  # killed before the commit
    os.symlink("step=4", tmp_path / "last")
    assert find_latest_checkpoint(tmp_path).name == "step=10"


def test_no_checkpoint_dir_means_none(tmp_path):
    assert find_latest_checkpoint(tmp_path / "missing") is None
    assert find_latest_checkpoint(tmp_path) is None


def test_inspect_accepts_an_intact_checkpoint(tmp_path):
    path = fake_checkpoint(tmp_path, "ok", 3)
    assert MegatronCheckpointIO().inspect(path)["step"] == 3


@pytest.mark.parametrize("damage,words", [
    (lambda p: (p / "weights" / "__0_0.distcp").write_bytes(b"x" * 10), "truncated"),
    (lambda p: (p / "weights" / "__0_0.distcp").write_bytes(b"y" * 64), "CRC32"),
    (lambda p: (p / "weights" / "__0_0.distcp").unlink(), "missing"),
    (lambda p: (p / MANIFEST).write_text("{not json"), "unreadable"),
    (lambda p: (p / MANIFEST).unlink(), "incomplete"),
])
def test_inspect_names_the_damage(tmp_path, damage, words):
    path = fake_checkpoint(tmp_path, "ckpt", 3)
    damage(path)
    with pytest.raises(CheckpointError) as error:
        MegatronCheckpointIO().inspect(path)
    assert words in str(error.value) and str(path) in str(error.value)


def test_checksums_can_be_skipped_but_sizes_are_always_checked(tmp_path):
    path = fake_checkpoint(tmp_path, "ckpt", 3)
    (path / "weights" / "__0_0.distcp").write_bytes(b"y" * 64)
    MegatronCheckpointIO(verify_checksums=False).inspect(path)
    (path / "weights" / "__0_0.distcp").write_bytes(b"y" * 63)
    with pytest.raises(CheckpointError, match="truncated"):
        MegatronCheckpointIO(verify_checksums=False).inspect(path)


def test_a_file_or_an_incomplete_dir_is_refused(tmp_path):
    (tmp_path / "model.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        MegatronCheckpointIO().inspect(tmp_path / "model.ckpt")
    incomplete = fake_checkpoint(tmp_path, "step=2.incomplete", 2)
    with pytest.raises(CheckpointError, match="interrupted"):
        MegatronCheckpointIO().inspect(incomplete)


def test_auto_resume_choices(tmp_path):
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        AutoResume(resume_if_exists=True).checkpoint_path(tmp_path)
    assert AutoResume(resume_if_exists=True, resume_ignore_no_checkpoint=True).checkpoint_path(
        tmp_path) is None
    fake_checkpoint(tmp_path, "step=6", 6)
    fake_checkpoint(tmp_path, "step=8.incomplete", 8)
    assert AutoResume(resume_if_exists=True).checkpoint_path(tmp_path).name == "step=6"
    assert AutoResume().checkpoint_path(tmp_path) is None  # resuming was not asked for
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        AutoResume(resume_from_path=str(tmp_path / "nope")).checkpoint_path()
    with pytest.raises(ValueError, match="resume_from_directory"):
        AutoResume(resume_if_exists=True).checkpoint_path(None)


def test_interrupted_saves_are_cleaned_up(tmp_path):
    fake_checkpoint(tmp_path, "step=6", 6)
    fake_checkpoint(tmp_path, "step=8.incomplete", 8)
    remove_incomplete(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step=6"]


def test_run_directory_is_stable_when_resuming(tmp_path, monkeypatch):
    monkeypatch.delenv("NEMO_LITE_RUN_VERSION", raising=False)
    logger = NeMoLogger(name="gpt", log_dir=str(tmp_path))
    assert logger.run_dir(resume_if_exists=True) == tmp_path / "gpt"
    versioned = logger.run_dir(resume_if_exists=False)
    assert versioned.parent == tmp_path / "gpt" and versioned.name
    # the ranks the launcher starts inherit its version through the environment, tagged with
    # the launcher's pid; any other process that inherits the variable picks its own
    assert os.environ["NEMO_LITE_RUN_VERSION"] == f"{os.getpid()}:{versioned.name}"
    monkeypatch.setenv("NEMO_LITE_RUN_VERSION", f"{os.getppid()}:2020-01-01_00-00-00")
    monkeypatch.setenv("LOCAL_RANK", "1")  # a rank started by its parent
    assert NeMoLogger(name="gpt", log_dir=str(tmp_path)).run_dir().name == "2020-01-01_00-00-00"
    monkeypatch.setenv("LOCAL_RANK", "0")  # the parent's own rank 0, or a later run: not it
    monkeypatch.setenv("NEMO_LITE_RUN_VERSION", f"{os.getppid()}:2020-01-01_00-00-00")
    assert NeMoLogger(name="gpt", log_dir=str(tmp_path)).run_dir().name != "2020-01-01_00-00-00"
    assert NeMoLogger(explicit_log_dir=str(tmp_path / "x")).run_dir() == tmp_path / "x"
