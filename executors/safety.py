"""What may reach a generated shell script, and how.

NeMo-Run's sbatch template quotes the `#SBATCH` values and the srun arguments, but writes
`export KEY=value` lines, the job's log paths (which contain the job name, its experiment's
title and NEMORUN_HOME) and `setup_lines` into the script unquoted. nemo_lite therefore:

- shell-quotes every value it writes itself (environment values, the virtual environment);
- allows only plain names (`[A-Za-z0-9_.-]`) where NeMo-Run does not quote: a job name is
  turned into such a slug for paths and Slurm's job name, and the original name reaches the
  job as data (`#SBATCH --comment`, quoted, and $NEMO_LITE_JOB_NAME);
- refuses account / partition / qos / variable names and job directories with other characters.

Secret environment variables (names containing KEY, TOKEN, SECRET or PASSWORD) are never put
into an executor's fields: see `executors.slurm` and `executors.launch`.
"""

from __future__ import annotations

import re
import shlex

from executors.errors import ExecutorError

SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SLURM_NAME = re.compile(r"[A-Za-z0-9_.,:@+%-]+\Z")
_SAFE_PATH = re.compile(r"[A-Za-z0-9_./+@%:,=-]+\Z")


def is_secret(name: str) -> bool:
    """True for environment variable names that hold credentials (WANDB_API_KEY, HF_TOKEN...)."""
    upper = name.upper()
    return any(word in upper for word in SECRET_WORDS)


def slug(name: str, default: str = "job") -> str:
    """`name` as a plain file / job name: runs of other characters become '-'."""
    out = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(name)).strip("-.")
    return out[:80].rstrip("-.") or default  # cut, then trimmed again: slug(slug(x)) == slug(x)


def check_env_names(names, what: str = "environment variable") -> None:
    bad = [n for n in names if not isinstance(n, str) or not _ENV_NAME.match(n)]
    if bad:
        raise ExecutorError(f"invalid {what} name(s) {', '.join(map(repr, bad))}: use letters, "
                            "digits and '_' (not starting with a digit).")


def check_slurm_name(field: str, value) -> None:
    if value is not None and not _SLURM_NAME.match(str(value)):
        raise ExecutorError(f"invalid Slurm {field} {str(value)!r}: use letters, digits and "
                            "'_.,:@+%-' only.")


def check_path(what: str, path: str) -> None:
    """Paths that NeMo-Run writes unquoted into the sbatch script (job directories)."""
    if not _SAFE_PATH.match(str(path)):
        raise ExecutorError(
            f"{what} {str(path)!r} contains spaces or shell characters, which NeMo-Run writes "
            "unquoted into the sbatch script: choose a directory made of letters, digits and "
            "'_./+@%:,=-' (e.g. set NEMORUN_HOME).")
    if "/nemo_run" in str(path):
        raise ExecutorError(
            f"{what} {str(path)!r} contains '/nemo_run', which NeMo-Run replaces by the job "
            "directory everywhere in the sbatch script (its container path): choose another "
            "directory name (e.g. NEMORUN_HOME=~/.nemo_run).")


def quote(value: str) -> str:
    """`value` as one shell word. Without a container NeMo-Run replaces every "/nemo_run" in the
    finished script by the job directory: that substring is written as /nemo''_run (the same
    word for the shell) so that values reach the job unchanged."""
    return shlex.quote(str(value)).replace("/nemo_run", "/nemo''_run")


def export_lines(env: dict) -> list[str]:
    """`export NAME='value'` lines, every value shell-quoted (data, never code)."""
    check_env_names(env)
    return [f"export {name}={quote(value)}" for name, value in env.items()]


def redact(env: dict) -> dict:
    """`env` with the values of secret names replaced, for printing and saved configs."""
    return {k: ("<redacted>" if is_secret(k) else v) for k, v in env.items()}


def split_secrets(env_vars: dict | None) -> tuple[dict[str, str], dict[str, str]]:
    """(plain, secret) environment values, names checked: secrets never go into a field that
    NeMo-Run writes to a file."""
    env = dict(env_vars or {})
    check_env_names(env)
    secrets = {k: str(v) for k, v in env.items() if is_secret(k)}
    return {k: str(v) for k, v in env.items() if k not in secrets}, secrets
