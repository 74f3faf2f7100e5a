"""How the embedded reference models (:mod:`scopecheck.reference`) were trained, runnable again.

:mod:`.train` trains the autoregressive reference models (``python -m scopecheck.training.train``)
and :mod:`.train_diffusion` the masked-diffusion ones (it samples with the diffusion engine to
check them); :mod:`.loop` holds what both share (special tokens, the word-level tokenizer, the
optimizer and schedule, the start of a run). This package sits above the engine in the layers
(it uses the diffusion sampler); the tasks and weights it produces are data
(:mod:`scopecheck.reference`), below it. Torch-free at import.
"""
