"""pyproject.toml allows only what CI tests: every pinned version CI installs (constraints.txt)
satisfies the project's bounds, and the libraries whose internals nemo_lite uses have an upper
bound below the next untested minor release."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
INTERNALS_USED = ("torch", "lightning", "megatron-core", "fiddle", "nemo-run")


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


PINS = {"3.11": "constraints.txt", "3.12": "constraints-py312.txt"}


def pins(python: str = "3.11") -> dict[str, Version]:
    out = {}
    for line in (ROOT / PINS[python]).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            out[requirement.name] = Version(spec.version)
    return out


def requirements(python: str) -> dict[str, Requirement]:
    """The project's requirements that apply on `python` (environment markers evaluated)."""
    out = {}
    extras = [r for group in project()["optional-dependencies"].values() for r in group]
    texts = [*project()["dependencies"], *(r for r in extras if r.split(">")[0].split("=")[0]
                                          not in ("pytest", "ruff", "nbclient", "nbformat",
                                                  "ipykernel", "transformer-engine[pytorch]"))]
    for text in dict.fromkeys(texts):
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({"python_version": python}):
            assert requirement.name not in out, requirement.name
            out[requirement.name] = requirement
    return out


@pytest.mark.parametrize("python", sorted(PINS))
def test_every_pinned_version_satisfies_the_project_bounds(python):
    applying = requirements(python)
    for name, version in pins(python).items():
        assert name in applying, name
        assert applying[name].specifier.contains(version), (python, name, version)


@pytest.mark.parametrize("python", sorted(PINS))
def test_libraries_whose_internals_are_used_have_upper_bounds(python):
    applying, tested = requirements(python), pins(python)
    for name in INTERNALS_USED:
        spec = applying[name].specifier
        assert any(s.operator in ("<", "<=", "==") for s in spec), (name, str(spec))
        next_minor = Version(f"{tested[name].major}.{tested[name].minor + 1}")
        assert not spec.contains(next_minor), (python, name, str(spec), next_minor)


def test_python_bound_is_the_tested_pythons():
    spec = SpecifierSet(project()["requires-python"])
    assert all(spec.contains(Version(python)) for python in PINS)
    assert not spec.contains(Version("3.13")), "widen only once CI runs 3.13"
