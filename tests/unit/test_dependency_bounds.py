"""pyproject.toml allows only what CI tests: every pinned version CI installs (constraints.txt)
satisfies the project's bounds, and the libraries whose internals nemo_lite uses have an upper
bound below the next untested minor release."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
INTERNALS_USED = ("torch", "lightning", "megatron-core", "fiddle", "nemo-run")


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def pins() -> dict[str, Version]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            out[requirement.name] = Version(spec.version)
    return out


def test_every_pinned_version_satisfies_the_project_bounds():
    requirements = {Requirement(r).name: Requirement(r) for r in project()["dependencies"]}
    for name, version in pins().items():
        assert name in requirements, name
        assert requirements[name].specifier.contains(version), (name, version)


def test_libraries_whose_internals_are_used_have_upper_bounds():
    requirements = {Requirement(r).name: Requirement(r) for r in project()["dependencies"]}
    tested = pins()
    for name in INTERNALS_USED:
        spec = requirements[name].specifier
        assert any(s.operator in ("<", "<=", "==") for s in spec), (name, str(spec))
        next_minor = Version(f"{tested[name].major}.{tested[name].minor + 1}")
        assert not spec.contains(next_minor), (name, str(spec), next_minor)


def test_python_bound_is_the_tested_python():
    import sys

    spec = SpecifierSet(project()["requires-python"])
    here = Version(f"{sys.version_info.major}.{sys.version_info.minor}")
    assert spec.contains(here)
    assert not spec.contains(Version("3.12")), "widen only once CI runs 3.12"
