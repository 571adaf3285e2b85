"""nemo_lite's command line: `nemo-lite llm pretrain --factory NAME key=value ...`.

The same commands as NeMo-Run's `nemo` (both find nemo_lite through the `nemo_run.cli` entry
point); Lightning and megatron-core are imported only when a run starts.
`nemo-lite data ...` (corpus, tokenizer, preprocessing) is plain argparse in
`nemo_lite.cli.data`, and `nemo-lite plot RUN_DIR` (loss curves as a PNG) is
`nemo_lite.cli.plot`: both dispatched before NeMo-Run is imported.
"""

from __future__ import annotations


def main() -> None:
    import os
    import sys
    import warnings

    if len(sys.argv) > 1 and sys.argv[1] == "data":
        from nemo_lite.cli.data import main as data_main

        sys.exit(data_main(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "plot":
        from nemo_lite.cli.plot import main as plot_main

        sys.exit(plot_main(sys.argv[2:]))

    if "NEMORUN_SHOW_WARNINGS" not in os.environ:
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
    from nemo_run.cli.api import create_cli

    create_cli()()
