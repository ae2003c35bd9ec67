"""export.made_with: the line a rerun says about the outputs it makes again, from the readable parts of their keys."""

from __future__ import annotations

from export.made_with import made_with, why_again


def test_a_setting_the_earlier_run_did_not_have_or_left_empty_is_named_as_none():
    """A setting a newer version added (absent from the earlier record), or one empty then (no --species-list, no
    formats), is named as 'none' before: left out, or said as '', the line read 'settings or model changed' or
    'species_list  -> list.txt'."""
    model = ["a" * 64]
    then = made_with(model, {"min_conf": 0.25, "species_list": "", "formats": ()})
    now = made_with(model, {"min_conf": 0.25, "species_list": "list.txt", "formats": ("raven",), "merge": True})
    assert why_again(then, now) == ("settings changed (species_list none -> list.txt, formats none -> raven, "
                                    "merge none -> True)")
