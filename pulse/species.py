"""The species PULSE knows by default: scientific name, English common name, short code.

Codes follow BirdNET-Analyzer's "Species Code" column: a short, stable, upper-case key.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Species:
    scientific: str
    common: str
    code: str


# The 9 of InsectSet32's 32 species that the bundled models were trained on (those in ../shared/data).
BUNDLED_SPECIES: tuple[Species, ...] = (
    Species("Chorthippus biguttulus", "Bow-winged Grasshopper", "CHOBIG"),
    Species("Chorthippus brunneus", "Common Field Grasshopper", "CHOBRU"),
    Species("Gryllus campestris", "Field Cricket", "GRYCAM"),
    Species("Nemobius sylvestris", "Wood Cricket", "NEMSYL"),
    Species("Oecanthus pellucens", "Italian Tree Cricket", "OECPEL"),
    Species("Pholidoptera griseoaptera", "Dark Bush-cricket", "PHOGRI"),
    Species("Pseudochorthippus parallelus", "Meadow Grasshopper", "PSEPAR"),
    Species("Roeseliana roeselii", "Roesel's Bush-cricket", "ROEROE"),
    Species("Tettigonia viridissima", "Great Green Bush-cricket", "TETVIR"),
)


def species_code(scientific: str) -> str:
    """A code for any binomial: first three letters of genus and epithet (BirdNET-style)."""
    genus, _, epithet = scientific.partition(" ")
    return (genus[:3] + epithet[:3]).upper()
