"""Progress of a long run, on a terminal and in a log file (a cluster job's `> log.txt`, a cron job's mail): PULSE's
recordings and LRMIL's slide batches.

On a terminal, a tqdm bar, with log lines printed above it (written as they were, each ended up glued to the end of
the bar: 1 000 bad files were 1 000 lines each starting with a stale bar). Elsewhere tqdm draws nothing, which left
a run of 30 000 files silent but for its errors until its last line (and LRMIL's bar, drawn anyway, filled an
overnight slide batch's log with carriage-return redraws); there, one plain line every LOG_EVERY_S says how far it
is and how long it has left.
"""

from __future__ import annotations

import contextlib
import logging
import sys

from tqdm import tqdm

log = logging.getLogger(__name__)

LOG_EVERY_S = 60.0  # a 10-hour run: 600 lines
LOG_FORMAT = "{desc}{percentage:.0f}% ({n_fmt} of {total_fmt} {unit}), {elapsed} elapsed, about {remaining} left"


@contextlib.contextmanager
def progress(iterable=None, *, total: float | None = None, unit: str, desc: str | None = None, leave: bool = True):
    """A tqdm bar over `iterable` (or updated by hand up to `total`), closed on leaving."""
    if sys.stderr.isatty():
        from tqdm.contrib.logging import logging_redirect_tqdm  # imports asyncio: ~25 ms a run, at a terminal only

        with logging_redirect_tqdm(), tqdm(iterable, total=total, unit=unit, desc=desc, leave=leave) as bar:
            yield bar
    else:  # redrawn only every LOG_EVERY_S (updates, and tqdm's monitor thread, refresh no sooner), first after it;
        # the ': ' that set_description adds, which a desc given here lacks ('saved scores0% (...)')
        with _CountedEachItem(iterable, total=total, unit=unit, desc=desc and f"{desc}: ", file=_LogLines(),
                              bar_format=LOG_FORMAT, mininterval=LOG_EVERY_S, maxinterval=LOG_EVERY_S,
                              delay=LOG_EVERY_S, miniters=1, leave=False) as bar:
            yield bar


class _CountedEachItem(tqdm):
    """A tqdm whose iteration counts each item at once: tqdm's own keeps the count to itself between the lines it
    draws, so the line its monitor thread draws during a long item had the count of a minute before ('46% (46 of
    100 slides), 02:10 elapsed' with 90 done). With miniters=1 the time since the last line is checked after every
    item: tqdm's dynamic miniters, set by 46 quick slides, held the next line back for 45 more, however long they
    took."""

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update()


class _LogLines:
    """Where tqdm writes off a terminal: each state it draws ('\\r' + the line) becomes one log line."""

    def write(self, text: str) -> None:
        if line := text.strip():
            log.info("%s", line)

    def flush(self) -> None:
        pass
