"""`combined.selection.table.txt`: every selection of the run in one Raven table (`--format raven_combined`), as
BirdNET-Analyzer's `--combine_results` writes `BirdNET_SelectionTable.txt`.

The recordings are one sequence, in the run's file order: each selection's Begin and End Time are shifted by the
lengths of the recordings before it (a recording without detections shifts those after it too; one that failed is
not in the sequence), Selection numbers run through the table, and Raven's Begin File stands beside Begin Path and
File Offset (s), the time in the recording. Beside it, as BirdNET-Analyzer's `.list.txt`,
`combined.selection.table.list.txt` lists the sequence's recordings, one absolute path a line, those without
detections too, which the table alone does not name: Raven Pro opens that list as one file sequence, and the table
over it puts each selection on its song. The list moves into place as it is written, ahead of the staged run-wide
tables (a run killed in between leaves it with the previous table, until a rerun).

A format of its own, asked for as BirdNET-Analyzer's combined table is: a season's thousands of recordings are not
one sequence anyone opens, and `raven`'s table per recording is what a review of one needs.
"""

from __future__ import annotations

import os.path
from pathlib import Path

from export.atomic import write_text
from pulse.schema import Columns
from pulse.writers import WRITERS
from pulse.writers.raven import RavenWriter, _cell

SEQUENCE_LIST = "combined.selection.table.list.txt"


@WRITERS.register("raven_combined")
class CombinedRavenWriter(RavenWriter):
    suffix = "combined.selection.table.txt"
    # The detections table plus `offset_s` (where each row's recording begins in the sequence) and `recordings`
    # (the sequence: one entry per recording, not per row).
    table = "sequence"
    per_file = False

    def write(self, table: Columns, path: Path) -> None:
        write_text(path.parent / SEQUENCE_LIST, "".join(_cell(os.path.abspath(f)) + "\n" for f in table["recordings"]))
        write_text(path, self.text(table, table["offset_s"]))
