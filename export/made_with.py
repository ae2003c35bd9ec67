"""Why a rerun does again what an earlier run into the same --out finished (`pulse analyze`, `pulse embeddings`,
`lrmil predict`).

Outputs are keyed by a hash of the model's bytes and the settings; the hash alone said nothing when it no longer
matched, and a rerun over a 30,000-file archive analysed it all again without a word why. So the readable parts of
the key, `made_with`, are kept beside it, and `why_again` compares them: the hash still decides, this only explains.
"""

from __future__ import annotations

import json
import re
from collections import Counter

UNKNOWN = "settings or model changed"  # a record whose `made_with` cannot be read (edited, damaged), or equal
_DIGEST = re.compile(r"[0-9a-f]{64}")


def made_with(model, settings: dict) -> dict:
    """The readable parts of a key: the model (its digests) and the settings, as JSON gives them back (lists for
    tuples), so that one just made equals one read from a record."""
    return json.loads(json.dumps({"model": model, "settings": settings}, default=str))


def why_again(then, now) -> str:
    """Why an output keyed with `then` (`made_with` read back from a record; anything else: not readable)
    is made again under `now`: the model's digests, or the settings by name, before and after."""
    if not all(isinstance(made, dict) and isinstance(made.get("settings"), dict) for made in (then, now)):
        return UNKNOWN
    reasons = []
    if then.get("model") != now["model"]:
        reasons.append(f"the model changed ({_model_change(then.get('model'), now['model'])})")
    before, after = then["settings"], now["settings"]
    changed = [f"{name} {_text(before.get(name))} -> {_text(after.get(name))}"
               for name in {**before, **after} if before.get(name) != after.get(name)]
    if changed:
        reasons.append(f"settings changed ({', '.join(changed)})")
    return " and ".join(reasons) or UNKNOWN


def said_again(reasons: Counter, what: str) -> str:
    """One line for a run: how many of `what` ("file(s) ... are done again") and why, by reason ("" if none)."""
    if not reasons:
        return ""
    if len(reasons) == 1:
        return f"{reasons.total()} {what}: {next(iter(reasons))}"
    return f"{reasons.total()} {what}: " + "; ".join(f"{n} as {why}" for why, n in reasons.most_common())


def _model_change(then, now) -> str:
    """The model's digests before and after; of a folder keyed file by file ([[name, digest], ...], lrmil's), those
    of the files that changed."""
    if not all(isinstance(model, list) and model and all(isinstance(f, list) and len(f) == 2 for f in model)
               for model in (then, now)):
        return f"was {_text(then)}, now {_text(now)}"
    before, after = dict(then), dict(now)
    return ", ".join(f"{name} was {_text(before.get(name))}, now {_text(after.get(name))}"
                     for name in {**before, **after} if before.get(name) != after.get(name))


def _text(value) -> str:
    """A value as a line says it: a sha256 by its first 12 digits, lists spaced out, nothing as 'none'."""
    if isinstance(value, list | tuple):
        return " ".join(_text(v) for v in value) or "none"
    if value is None or value == "":
        return "none"
    text = str(value)
    return text[:12] + "..." if _DIGEST.fullmatch(text) else text
