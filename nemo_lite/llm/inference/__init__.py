"""Generation with a trained or imported model on megatron-core's inference stack.

`generate(path, prompts, ...)` loads a checkpoint (any layout it was saved from) and runs
megatron's static-batch engine with its KV cache; `engine.py` builds that engine for the installed
megatron-core release, `tokenizer.py` gives megatron the tokenizer interface it calls.
"""
