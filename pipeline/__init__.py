"""The Luigi workflow: `luigi --module pipeline BuildSubject --subject 043`.

Thin by design: task classes, parameters, output paths and settings; every run() calls one
function in `tasks/`. Settings live in luigi.cfg (`[faceanything]`, `[sample]`, ...).
"""

from pipeline.build import BuildSubject
from pipeline.dataset import BuildDataset
from pipeline.dataset_tasks import Canonicalize, TrackSubject, WriteShards
from pipeline.reconstruction import (
    ExtractFrames,
    ExtractSequenceFrames,
    Reconstruct,
    ReconstructSubject,
)
from pipeline.selection import ExtractSignals, SelectFrames
from pipeline.subject import GenerateSampleSubject, InspectSubject

__all__ = [
    "BuildDataset",
    "BuildSubject",
    "Canonicalize",
    "ExtractFrames",
    "ExtractSequenceFrames",
    "ExtractSignals",
    "GenerateSampleSubject",
    "InspectSubject",
    "Reconstruct",
    "ReconstructSubject",
    "SelectFrames",
    "TrackSubject",
    "WriteShards",
]
