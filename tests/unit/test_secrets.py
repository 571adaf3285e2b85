"""Secrets passed to a run through a file (what the docker executor does)."""

from __future__ import annotations

import os

import pytest

from executors import safety
from nemo_lite.secrets import load_secrets_file


def test_export_lines_round_trip_through_the_secrets_file(tmp_path, monkeypatch):
    value = """k3y "q" 'sq' $(touch x) `y`; z \\ $HOME"""
    path = tmp_path / "secrets.env"
    path.write_text("".join(f"{line}\n" for line in safety.export_lines({"NL_TEST_KEY": value})))
    monkeypatch.setenv("NEMO_LITE_SECRETS_FILE", str(path))
    monkeypatch.delenv("NL_TEST_KEY", raising=False)
    assert load_secrets_file() == ["NL_TEST_KEY"]
    assert os.environ["NL_TEST_KEY"] == value
    monkeypatch.delenv("NL_TEST_KEY")


def test_no_file_means_nothing_and_a_missing_file_is_an_error(tmp_path, monkeypatch):
    monkeypatch.delenv("NEMO_LITE_SECRETS_FILE", raising=False)
    assert load_secrets_file() == []
    with pytest.raises(FileNotFoundError, match="launch it again"):
        load_secrets_file(str(tmp_path / "gone.env"))
