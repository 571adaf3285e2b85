"""nemo_lite: configure, launch and train Megatron-Core models from Python.

`from nemo_lite import lightning as nl` and `from nemo_lite import llm` are cheap: the heavy
libraries (Lightning, megatron-core) load when a name that needs them is first used.
"""

__version__ = "0.1.0"
