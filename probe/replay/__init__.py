"""Offline mode: read checkpoint families, replay them into tables, correlate with accuracy.

The names below are imported on first use (PEP 562), so that importing a submodule
such as ``probe.replay.commands`` (the CLI's parser) does not import torch; heavy
optional imports (pandas, matplotlib, safetensors) happen inside the functions that need them.
"""

from __future__ import annotations

from probe._lazy import lazy_exports

_EXPORTS = {
    "genprob": ("GenProbName", "genprob_filename", "parse_genprob_name", "save_genprob_checkpoint", "write_genprob_csv"),
    "readers": ("Checkpoint", "CheckpointError", "UnsafeCheckpointError", "load_checkpoint"),
    "runner": ("Outcome", "find_checkpoints", "iter_replay", "merge", "replay"),
    "store": ("CorruptRecordError",),
    "tables": ("Tables", "consolidate"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}


__getattr__, __dir__ = lazy_exports(__name__, _MODULE_OF)


__all__ = sorted(_MODULE_OF)  # noqa: PLE0605 - the lazily imported names
