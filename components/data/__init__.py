"""litops.data: the embedded synthetic benchmark, user-data ingest and DVC versioning.

Public API (what the flows call):
    synthesize(cfg, ws=None, force=False) -> dict     # generate the embedded benchmark
    ingest(path, cfg, ws=None) -> dict                # validate + add user samples
    DataRepo(ws).ensure() / .version(name) / .pull(name, data_version=None)
    prepare(cfg, ws=None) -> dict                     # synth if needed + version
CLI: python -m litops.data {synth,add,version,pull} [--config CFG.json]

DVC is imported lazily (only by DataRepo methods), so importing this package is cheap.
"""

from .api import add_and_version, prepare, pull, synth_and_version
from .ingestion import REASONS, ingest
from .synth import HELDOUT, attributes, synthesize
from .versioning import DataRepo

__all__ = [
    "synthesize",
    "ingest",
    "DataRepo",
    "prepare",
    "synth_and_version",
    "add_and_version",
    "pull",
    "attributes",
    "HELDOUT",
    "REASONS",
]
