"""nemo_lite's command line: `nemo-lite llm pretrain --factory NAME key=value ...`.

The same commands as NeMo-Run's `nemo` (both find nemo_lite through the `nemo_run.cli` entry
point); Lightning and megatron-core are imported only when a run starts.
"""

from __future__ import annotations


def main() -> None:
    import os
    import warnings

    if "NEMORUN_SHOW_WARNINGS" not in os.environ:
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
    from nemo_run.cli.api import create_cli

    create_cli()()
