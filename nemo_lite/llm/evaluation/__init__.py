"""`llm.evaluate`: lm-eval-harness tasks on a nemo_lite checkpoint, in process.

`evaluate.py` loads the checkpoint with `llm.load_generator` and runs lm-eval's `simple_evaluate`
with `lm.NemoLiteLM` (loglikelihood, rolling loglikelihood, generation) over tasks found in local
YAML: the two shipped here (`tasks/`, built from the stdlib by `build_tasks.py`) and any
directory the user names (`include_path`). Nothing is downloaded.
"""
