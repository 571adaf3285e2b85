"""Generation with a trained or imported model on megatron-core's inference stack.

`generate(path, prompts, ...)` (generate.py) loads a checkpoint for one call;
`load_generator(path, trainer)` (generator.py) keeps it loaded for many. `checks.py` refuses bad
input before anything loads; `controller.py` samples from the real vocabulary; `stopping.py`
applies stop strings; `tokenizer.py` gives megatron the tokenizer interface it calls; the engine
itself is built by `lightning/mcore_compat.static_inference_engine` for the installed release.
"""
