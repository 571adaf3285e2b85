"""The ranks of one torchrun job write to one timestamped run directory, even when their clocks
tick between their picks (they agree through torchrun's agent store)."""

from __future__ import annotations

from tests._support.ranks import torchrun


def test_torchrun_ranks_agree_on_the_run_directory(tmp_path):
    torchrun(2, "run_version.py", str(tmp_path / "logs"), str(tmp_path))
    dirs = {(tmp_path / f"{rank}.txt").read_text() for rank in (0, 1)}
    assert len(dirs) == 1, dirs
    assert dirs.pop().startswith(str(tmp_path / "logs" / "v" / "20"))
