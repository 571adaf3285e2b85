"""Secrets handed to a run through a file, never through saved configs or logs.

An executor that cannot pass an environment variable without writing it into a file NeMo-Run
keeps (a container's settings are saved with its job) writes secrets (W&B keys, tokens) to a
mode-600 file for the length of the run and sets NEMO_LITE_SECRETS_FILE to its path; the run
loads it into its environment before anything that may need them starts.
"""

from __future__ import annotations

import os
import shlex

ENV = "NEMO_LITE_SECRETS_FILE"


def load_secrets_file(path: str | None = None) -> list[str]:
    """`export NAME=value` lines (shell-quoted values) of `path` (default $NEMO_LITE_SECRETS_FILE)
    into os.environ; returns the names loaded, never the values."""
    path = path or os.environ.get(ENV)
    if not path:
        return []
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{ENV}={path} does not exist: the run was started with secrets "
                                "that are not there any more (launch it again).")
    names = []
    with open(path) as f:
        for line in f:
            words = shlex.split(line, comments=True)
            if not words:
                continue
            if words[0] == "export":
                words = words[1:]
            for word in words:
                name, sep, value = word.partition("=")
                if sep and name.isidentifier():
                    os.environ[name] = value
                    names.append(name)
    return names
