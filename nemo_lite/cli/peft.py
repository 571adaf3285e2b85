"""`nemo llm peft merge | export --path LORA_CKPT --output DIR`: the checks before they run.

Both commands take NeMo-Run's `key=value` arguments (`path=... output_path=... overwrite=true`)
and, as NeMo users type them, the flags `--path`, `--output` and `--overwrite`, translated here
into those overrides before NeMo-Run parses them. `check_peft_task` looks at the resolved task
without writing anything and returns the lines `--dryrun` prints; any problem is one line and
exit 2, as for training.
"""

from __future__ import annotations

from typing import Any

ENTRYPOINTS = ("merge_lora", "export_lora")
FLAGS = {"--path": "path", "--output": "output_path"}


def flags_to_overrides(args: list[str]) -> list[str]:
    """`--path X` / `--path=X` / `--output X` / `--overwrite` as NeMo-Run overrides."""
    out, rest = [], list(args)
    while rest:
        arg = rest.pop(0)
        flag, eq, value = arg.partition("=")
        if flag == "--overwrite" and not eq:
            out.append("overwrite=true")
        elif flag in FLAGS:
            if not eq:
                if not rest or rest[0].startswith("--"):
                    raise ValueError(f"{flag} needs a value: {flag} DIR.")
                value = rest.pop(0)
            out.append(f"{FLAGS[flag]}={value}")
        else:
            out.append(arg)
    return out


def check_peft_task(task: Any) -> list[str]:
    import fiddle as fdl

    from nemo_lite.llm.peft.hf_adapter import check_export
    from nemo_lite.llm.peft.merged_checkpoint import check_merge

    arguments = dict(task.__arguments__)
    check = check_merge if fdl.get_callable(task).__name__ == "merge_lora" else check_export
    return check(arguments.get("path"), arguments.get("output_path"),
                 bool(arguments.get("overwrite")))
