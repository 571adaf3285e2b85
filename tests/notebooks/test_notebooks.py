"""The notebooks a new user opens first (notebooks/), executed top to bottom with nbclient.

Each runs in a fresh kernel of this venv ("python3") with the notebooks directory as working
directory; everything a notebook writes goes under $NEMO_LITE_NOTEBOOK_DIR (a temporary
directory here). Each notebook saves what it measured as JSON there, which the tests check,
besides the printed outputs. The executed copies are kept next to it (`*.executed.ipynb`).
03_launching runs its Slurm / Docker cells against the real test daemons when the executor
tests' fixtures can start them (root, tests/infra), and checks that they said why not otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

from tests._support.wall_times import record as record_wall_time  # noqa: E402

pytestmark = pytest.mark.distributed

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
NAMES = ("01_quickstart", "02_configs", "03_launching")
CELL_TIMEOUT = 420  # seconds per cell: a cell trains one short run
SLURM_VARS = ("SLURM_CONF", "NEMO_LITE_SLURM_DIR", "NEMO_LITE_SLURM_ACCOUNT",
              "NEMO_LITE_SLURM_PARTITION")
DOCKER_VARS = ("DOCKER_HOST", "NEMO_LITE_DOCKER_IMAGE")


def execute(name: str, work: Path, monkeypatch, record_property,
            env: dict[str, str] | None = None):
    """Run notebooks/<name>.ipynb in a new kernel; return (executed notebook, all its text)."""
    monkeypatch.setenv("NEMO_LITE_NOTEBOOK_DIR", str(work))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    before = _listing(NOTEBOOKS)
    start = time.monotonic()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as error:
        pytest.fail(f"{name}.ipynb: a cell failed:\n{str(error)[-6000:]}")
    finally:
        record_wall_time(record_property, f"{name}.ipynb", time.monotonic() - start)
        nbformat.write(nb, work / f"{name}.executed.ipynb")
    errors = [out for cell in nb.cells for out in cell.get("outputs", [])
              if out.output_type == "error"]
    assert not errors, errors
    assert _listing(NOTEBOOKS) == before, "the notebook wrote beside itself, not under its work dir"
    return nb, "\n".join(_text(out) for cell in nb.cells for out in cell.get("outputs", []))


def _listing(directory: Path) -> dict[str, float]:
    return {str(p.relative_to(directory)): p.stat().st_mtime for p in directory.rglob("*")
            if "__pycache__" not in p.parts and ".ipynb_checkpoints" not in p.parts}


def _text(output) -> str:
    if output.output_type == "stream":
        return output.text
    return output.get("data", {}).get("text/plain", "")


def test_quickstart_trains_tiny_gpt_on_two_ranks_and_plots_the_loss(tmp_path, monkeypatch,
                                                                    record_property):
    nb, text = execute("01_quickstart", tmp_path, monkeypatch, record_property)
    result = json.loads((tmp_path / "01_quickstart" / "quickstart.json").read_text())
    assert result["state"] == "SUCCEEDED"
    losses = dict(result["losses"])  # from the TensorBoard events
    assert sorted(losses) == list(range(1, 11)), losses
    assert losses[10] < losses[1] - 0.1, losses
    printed = {int(k): v for k, v in result["printed_steps"].items()}  # the job's step lines
    assert sorted(printed) == list(range(1, 11))
    assert all(abs(printed[s] - losses[s]) < 1e-3 for s in printed), (printed, losses)
    summary = "\n".join(result["summary"])
    assert "ranks        2 on cpu (gloo): TP 2 x PP 1" in summary, summary
    assert "parameters   236,928 in total; per rank: 121,344, 121,344" in summary, summary
    # the plan (ranks, layout, memory), the refused layout, the summary and the curve were shown
    assert "ranks needed: 2" in text and "memory per rank (estimate):" in text
    assert "LayoutError: world size 2 is not divisible by tensor (3)" in text, [
        line for line in text.splitlines() if "Error" in line or "tensor" in line]
    assert "recipe       (Python API)" in text and "step 10/10 | loss" in text
    assert any("image/png" in out.get("data", {}) for cell in nb.cells
               for out in cell.get("outputs", [])), "no loss plot shown"
    run_dir = tmp_path / "01_quickstart" / "runs" / "quickstart"
    assert (run_dir / "checkpoints" / "step=10-consumed_samples=80" / "nemo_lite.json").exists()


def test_configs_custom_steps_and_a_run_rebuilt_from_its_checkpoint(tmp_path, monkeypatch,
                                                                    record_property):
    nb, text = execute("02_configs", tmp_path, monkeypatch, record_property)
    result = json.loads((tmp_path / "02_configs" / "configs.json").read_text())
    first = {int(k): v for k, v in result["first_steps"].items()}
    continued = {int(k): v for k, v in result["continued_steps"].items()}
    assert sorted(first) == [1, 2, 3, 4, 5], first
    # the rebuilt run continues right after the saved step, restored from its checkpoint
    assert result["saved_step"] == 5
    assert sorted(continued) == list(range(result["saved_step"] + 1, 11)), continued
    assert len(result["restored"]) == 1 and "step=5-consumed_samples=40" in result["restored"][0]
    assert continued[10] < first[1] - 0.1, (first, continued)
    # both custom steps ran on the ranks: 8 sequences x (64 - 8 skipped positions) tokens
    assert result["token_counts"] == [448], result["token_counts"]
    # the allow-list refused the notebook's module, then allow= let it load
    assert "ContextError:" in text and "`my_steps.CountingGPTModel`: it is outside the allow-list" in text
    assert "CountingGPTModel | data step: skip_prefix_data_step | loss reduction: " \
           "TokenCountingLossReduction" in text
    assert "step loss: 4.0" in text
    assert (tmp_path / "02_configs" / "my_steps.py").exists()


def _daemon_env(request, fixture: str, names: tuple[str, ...], monkeypatch) -> dict[str, str]:
    """The fixture's environment when it can provide the daemon; else {} with its variables
    removed from the kernel's environment (the notebook must then skip that part)."""
    try:
        env = request.getfixturevalue(fixture)
    except pytest.skip.Exception as why:
        print(f"{fixture}: not available ({why}); the notebook must skip it")
        for key in names:
            monkeypatch.delenv(key, raising=False)
        return {}
    if fixture == "docker_engine":
        return {"DOCKER_HOST": env["DOCKER_HOST"], "NEMO_LITE_DOCKER_IMAGE": env["image"]}
    return dict(env)


def test_launching_on_local_torchrun_slurm_and_docker(tmp_path, monkeypatch, request,
                                                      record_property):
    slurm = _daemon_env(request, "slurm_cluster", SLURM_VARS, monkeypatch)
    docker = _daemon_env(request, "docker_engine", DOCKER_VARS, monkeypatch)
    nb, text = execute("03_launching", tmp_path, monkeypatch, record_property,
                       {**slurm, **docker})
    result = json.loads((tmp_path / "03_launching" / "launching.json").read_text())
    assert result["local"]["state"] == "SUCCEEDED" and "local: SUCCEEDED in" in text
    assert result["torchrun"]["state"] == "SUCCEEDED" and "torchrun: SUCCEEDED in" in text
    for what, env in (("slurm", slurm), ("docker", docker)):
        if env:
            assert result[what]["state"] == "SUCCEEDED", result
            assert f"{what}: SUCCEEDED in" in text
            run_dir = tmp_path / "03_launching" / "runs" / what
            assert (run_dir / "checkpoints" / "step=5-consumed_samples=40").is_dir()
        else:
            assert result[what]["state"] == "skipped", result
            assert f"{what.capitalize()}: skipped, " in text
    for what in ("local", "torchrun"):  # 5 steps each, checkpointed
        run_dir = tmp_path / "03_launching" / "runs" / what
        assert (run_dir / "checkpoints" / "step=5-consumed_samples=40" / "nemo_lite.json").exists()
    print(json.dumps(result))


def _notebooks_in_git() -> list[Path]:
    proc = subprocess.run(["git", "-C", str(ROOT), "ls-files", "notebooks/*.ipynb"],
                          capture_output=True, text=True)
    listed = [ROOT / p for p in proc.stdout.split()] if proc.returncode == 0 else []
    return listed or sorted(NOTEBOOKS.glob("*.ipynb"))


def test_notebooks_are_stripped_v4_python3_notebooks():
    paths = _notebooks_in_git()
    assert {p.stem for p in paths} >= set(NAMES), paths
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert nb.nbformat == 4 and nb.metadata.kernelspec.name == "python3", path
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, (path, cell.source[:80])
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "strip_notebooks.py"),
                           "--check", *map(str, paths)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert os.access(ROOT / "scripts" / "strip_notebooks.py", os.R_OK)
