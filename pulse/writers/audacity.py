"""Audacity label track, one per recording, as BirdNET-Analyzer's `--rtype audacity` writes it:
`start<TAB>end<TAB>Scientific name, Common name<TAB>confidence`, importable via File > Import > Labels.

Audacity takes the third cell as the label and ignores the confidence after it, so the label names only the species:
with the score in it (`Field Cricket, 0.9999`) every row would be a class of its own to the readers that load these
labels (crowsetta, opensoundscape, scikit-maad).
"""

from __future__ import annotations

from pathlib import Path

from export.atomic import write_text
from pulse.schema import Columns
from pulse.writers import WRITERS, rows


@WRITERS.register("audacity")
class AudacityWriter:
    suffix = ".pulse.results.txt"
    table = "detections"
    per_file = True

    def write(self, table: Columns, path: Path) -> None:
        columns = ("start_s", "end_s", "label", "common_name", "score")
        lines = [f"{start:.3f}\t{end:.3f}\t{_species(label, common)}\t{score:.4f}\n"
                 for start, end, label, common, score in rows(table, columns)]
        write_text(path, "".join(lines))


def _species(label: str, common: str) -> str:
    """BirdNET-Analyzer's `Scientific name, Common name`; the label alone where the model has no common name."""
    return label if common == label else f"{label}, {common}"
