"""Runtime plumbing shared by the engine, the checks and the CLI: progress of long phases
(:mod:`~scopecheck.runtime.progress`, torch-free), the devices' memory
(:mod:`~scopecheck.runtime.devices`) and memory-aware batching
(:mod:`~scopecheck.runtime.batching`), output files (:mod:`~scopecheck.runtime.files`) and the
Jinja environment of the HTML pages (:mod:`~scopecheck.runtime.templates`). Imports nothing from the engine or the checks."""
