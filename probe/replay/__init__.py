"""Offline mode: read checkpoint families, replay them into tables, correlate with accuracy.

Heavy optional imports (pandas, matplotlib, safetensors) happen inside the functions
that need them.
"""

from probe.replay.genprob import (
    GenProbName,
    genprob_filename,
    parse_genprob_name,
    save_genprob_checkpoint,
    write_genprob_csv,
)
from probe.replay.readers import (
    Checkpoint,
    CheckpointError,
    UnsafeCheckpointError,
    load_checkpoint,
)
from probe.replay.runner import (
    Options,
    Outcome,
    find_checkpoints,
    iter_replay,
    merge,
    replay,
)
from probe.replay.store import CorruptRecordError
from probe.replay.tables import Tables, consolidate

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "CorruptRecordError",
    "GenProbName",
    "Options",
    "Outcome",
    "Tables",
    "UnsafeCheckpointError",
    "consolidate",
    "find_checkpoints",
    "genprob_filename",
    "iter_replay",
    "load_checkpoint",
    "merge",
    "parse_genprob_name",
    "replay",
    "save_genprob_checkpoint",
    "write_genprob_csv",
]
