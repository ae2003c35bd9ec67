"""When each species sings (`pulse activity`): detections and minutes of audio analysed per site, date and hour of
the recorder's clock, or of a time zone asked for, from a finished `pulse analyze` run.

Orthoptera are strongly diel (crickets and bush-crickets at night, grasshoppers by day), and an hour without a
detection says nothing unless it was recorded: effort comes with every count. Both come from the run's journal
(pulse/journal.py), which keeps every analysed recording's windows and scores, the recordings without detections
too, and the name its outputs went under, whose folder is the site; detections.csv lists only recordings with
detections, in rows that --merge-consecutive may have merged. So a window scoring at least --min-conf is one
detection (any --min-conf, also below the run's), and the recordings need not be at hand: a start time in the file
name is enough (`pulse.timestamps.stated_start`; a name without one needs the file, for its GUANO or bext, and a
Song Meter's or AudioMoth's states its clock's UTC offset only in the file, in its GUANO or comment).

Recorders name files by their own clock, AudioMoth's UTC by default, so hours as named put a German night's crickets
at 19-03 h and split its dates at 02 h. `--timezone` places every recording in time (by the UTC offset its name,
GUANO or AudioMoth comment gives, else by `--clock-timezone`, UTC unless told) and bins by the hour of that zone's
clock, DST included: the hour a clock set back passes twice is one row with both passes' audio, the hour it skips
none, so the effort is still all the audio analysed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path, PurePosixPath
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from export.atomic import write_text
from export.files import distinct_tails
from export.jsonconfig import read_json
from pulse.io import AUDIO_SUFFIXES
from pulse.journal import Journal
from pulse.plots import PlotConfig, new_figure, readable, save_png
from pulse.schema import LabelSet
from pulse.timestamps import stated_start
from pulse.writers import csv_text

# timezone: the IANA zone whose clock date and hour are of, "" for each recorder's clock as named
ACTIVITY_COLUMNS = ("site", "species", "date", "hour", "detections", "effort_min", "detections_per_hour", "timezone")
MAX_HEATMAP_DAYS = 62  # more dates than this: a diel bar chart pooled over dates, not a date x hour heatmap
MAX_PANELS = 12  # species drawn at most, the most detected
PANEL_PX = 220
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)  # numpy's datetime64 counts from it
NOT_RECORDED = "0.75"  # grey: an hour never recorded, unlike one recorded without song (the colour map's zero)


@dataclass(frozen=True)
class Recording:
    """One analysed recording: its site, start (in UTC: an instant), and windows with their scores."""

    site: str
    start: datetime
    starts_s: np.ndarray
    ends_s: np.ndarray
    scores: np.ndarray


@dataclass
class Summary:
    recordings: int = 0
    undated: int = 0  # recordings with no start time in their name or metadata: left out
    elsewhere: int = 0  # recordings in the run's journal below none of its inputs: left out
    audio_s: float = 0.0
    sites: int = 0
    detections: int = 0
    species: int = 0


def run_recordings(
    run_dir: Path, clock_zone: tzinfo | None = None,
) -> tuple[list[Recording], int, int, LabelSet, float]:
    """The recordings the run's journal holds below the run's inputs (those with a start time), how many have none,
    how many records are of no input (left out), the model's species and the run's --min-conf. A start is placed in
    time by the UTC offset the file gives, else as a time of `clock_zone`."""
    try:
        record = read_json(run_dir / "config.json")
        labels = LabelSet.from_metadata(record["model_metadata"])
        min_conf = float(record["config"]["min_conf"])
        inputs = [Path(record["working_dir"], given).resolve() for given in record["inputs"]]
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(f"{run_dir}: not a finished `pulse analyze` --out folder (no config.json of a run in "
                         "it)") from None
    journal = run_dir / ".pulse" / "journal"
    sites = input_sites(inputs)
    recordings, undated, elsewhere = [], 0, 0
    for path, (_, arrays) in Journal(journal, "").recordings().items():
        root = next((root for root in sites if Path(path).is_relative_to(root)), None)
        if root is None:  # an earlier run's into the same folder, of other inputs (or reached through a link)
            elsewhere += 1
            continue
        if arrays["scores"].shape[1:] != (len(labels.labels),):
            raise ValueError(f"{journal}: {path} was scored for {arrays['scores'].shape[1:]} species, the run's "
                             f"model has {len(labels.labels)}; run `pulse analyze` again into {run_dir}")
        if (start := stated_start(path)) is None:
            undated += 1
            continue
        if clock_zone is None:  # each clock as named: taken for UTC, whose hours are then those named
            start = start.replace(tzinfo=timezone.utc)
        elif start.tzinfo is None:  # the file does not say its clock's zone
            start = start.replace(tzinfo=clock_zone)
        site = sites[root].joinpath(*Path(path).parent.relative_to(root).parts).as_posix()
        recordings.append(Recording("" if site == "." else site, start.astimezone(timezone.utc), arrays["starts_s"],
                                    arrays["ends_s"], arrays["scores"]))
    if not recordings and not undated:
        raise ValueError(f"{run_dir}: its journal ({journal}) holds no analysed recording of the run's inputs")
    return recordings, undated, elsewhere, labels, min_conf


def input_sites(inputs: list[Path]) -> dict[Path, PurePosixPath]:
    """Each input's folder (a recording's own, for one given alone) and the name its sites start with: none for
    one folder, as few of its last names as tell it from the others for several (`export.files.distinct_tails`:
    two flat AudioMoth cards given as AM01 and AM02 are two sites, not one)."""
    roots = [given.parent if given.suffix.lower() in AUDIO_SUFFIXES and not given.is_dir() else given
             for given in inputs]
    if len(set(roots)) == 1:
        return {roots[0]: PurePosixPath()}
    return {root: PurePosixPath(tail.as_posix()) for root, tail in distinct_tails(set(roots)).items()}


def analysed_spans(starts_s: np.ndarray, ends_s: np.ndarray) -> list[tuple[float, float]]:
    """The seconds of a recording its windows cover, overlapping windows joined (a damaged part read past is not)."""
    spans: list[tuple[float, float]] = []
    for start, end in zip(starts_s.tolist(), ends_s.tolist()):
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], end))
        else:
            spans.append((start, end))
    return spans


def clock_hours(start: datetime, begin_s: float, end_s: float, zone: tzinfo = timezone.utc):
    """(date, hour, seconds) of each hour of `zone`'s clock the span [begin_s, end_s) after `start` (aware) falls
    in; the seconds of an hour the clock passes twice (set back) are both passes'."""
    start = start.astimezone(timezone.utc)  # arithmetic in UTC: in a zone's own, an hour set back would not count
    at, end = start + timedelta(seconds=begin_s), start + timedelta(seconds=end_s)
    while at < end:
        local = at.astimezone(zone)
        next_hour = local.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        stop = min(end, next_hour.astimezone(timezone.utc))
        yield local.date().isoformat(), local.hour, (stop - at).total_seconds()
        at = stop


def activity_table(recordings: list[Recording], labels: tuple[str, ...], min_conf: float,
                   zone: ZoneInfo | None = None) -> pd.DataFrame:
    """ACTIVITY_COLUMNS: a row per site, date and hour recorded and species detected (most detected first; species
    "" where none was, to keep the effort); hours of `zone`'s clock, of UTC (the clocks as named) without one."""
    clock = zone or timezone.utc
    effort_s: Counter = Counter()  # (site, date, hour) -> seconds analysed
    counts: Counter = Counter()  # (site, species, date, hour) -> windows at or above min_conf
    for rec in recordings:
        for begin, end in analysed_spans(rec.starts_s, rec.ends_s):
            for date, hour, seconds in clock_hours(rec.start, begin, end, clock):
                effort_s[rec.site, date, hour] += seconds
        # counted by (UTC minute, species) in numpy, a cricket singing all night being 1200 detections an hour; a
        # minute is in one hour of any zone's clock (UTC offsets are whole minutes)
        windows, species = np.nonzero(rec.scores >= min_conf)
        at = (np.datetime64(rec.start.replace(tzinfo=None), "us")
              + np.round(rec.starts_s[windows] * 1e6).astype("timedelta64[us]"))
        keys, n = np.unique(at.astype("datetime64[m]").astype(np.int64) * len(labels) + species, return_counts=True)
        for key, count in zip(keys.tolist(), n.tolist()):
            minute = (EPOCH + timedelta(minutes=key // len(labels))).astimezone(clock)
            counts[rec.site, labels[key % len(labels)], minute.date().isoformat(), minute.hour] += count
    totals = Counter()
    for (_, species, _, _), n in counts.items():
        totals[species] += n
    species = [name for name, _ in totals.most_common()] or [""]
    rows = [(site, name, date, hour, counts[site, name, date, hour], seconds / 60,
             counts[site, name, date, hour] / (seconds / 3600), zone.key if zone else "")
            for (site, date, hour), seconds in sorted(effort_s.items()) if seconds > 0 for name in species]
    return pd.DataFrame(rows, columns=list(ACTIVITY_COLUMNS))


def activity_figure(table: pd.DataFrame, min_conf: float, cfg: PlotConfig = PlotConfig()):
    """Per species (the most detected), detections per hour of audio by hour of day, sites pooled: a date x hour
    heatmap, or past MAX_HEATMAP_DAYS dates a diel bar chart pooled over dates; hours never recorded in grey."""
    species = list(dict.fromkeys(table["species"]))[:MAX_PANELS]
    zone = table["timezone"].iloc[0] if "timezone" in table and len(table) else ""
    dates = sorted(set(table["date"]))
    diel = len(dates) > MAX_HEATMAP_DAYS
    figure = new_figure(replace(cfg, height_px=PANEL_PX * len(species) + 60))
    for ax, name in zip(figure.subplots(len(species), 1, squeeze=False)[:, 0], species):
        one = table[table["species"] == name]
        grid = one.groupby(["date", "hour"])[["detections", "effort_min"]].sum()
        detections = grid["detections"].unstack().reindex(index=dates, columns=range(24)).fillna(0).to_numpy()
        effort_h = grid["effort_min"].unstack().reindex(index=dates, columns=range(24)).fillna(0).to_numpy() / 60
        if diel:
            _diel_bars(ax, detections.sum(axis=0), effort_h.sum(axis=0))
        else:
            _heatmap(figure, ax, detections, effort_h, dates)
        count = int(detections.sum())
        ax.set_title(f"{name or 'no species detected'}: {count} detection{'' if count == 1 else 's'} in "
                     f"{_duration(effort_h.sum())} of audio", fontsize=9)
        ax.set_xticks(range(0, 24, 2))
        ax.set_xlabel(f"Hour of {zone} time" if zone else "Hour of the recorder's clock")
    sites = table["site"].nunique()
    figure.suptitle(f"Detections per hour of audio (windows scoring at least {min_conf:g}), {sites} site(s) pooled; "
                    "grey: not recorded", fontsize=10)
    return readable(figure)


def _duration(hours: float) -> str:
    return f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.1f} min"


def _heatmap(figure, ax, detections: np.ndarray, effort_h: np.ndarray, dates: list[str]) -> None:
    from matplotlib import colormaps

    rate = np.ma.masked_where(effort_h <= 0, detections / np.where(effort_h > 0, effort_h, 1))
    cmap = colormaps["viridis"].with_extremes(bad=NOT_RECORDED)
    image = ax.imshow(rate, aspect="auto", interpolation="nearest", cmap=cmap, vmin=0,
                      vmax=max(float(rate.max() or 0), 1e-9), extent=(-0.5, 23.5, len(dates) - 0.5, -0.5))
    step = max(1, len(dates) // 8)
    ax.set_yticks(range(0, len(dates), step), dates[::step], fontsize=7)
    figure.colorbar(image, ax=ax, fraction=0.04, pad=0.01).set_label("per hour of audio", fontsize=8)


def _diel_bars(ax, detections: np.ndarray, effort_h: np.ndarray) -> None:
    from matplotlib.patches import Patch

    hours = np.arange(24)
    recorded = effort_h > 0
    ax.bar(hours[recorded], detections[recorded] / effort_h[recorded], width=0.8)
    for hour in hours[~recorded]:
        ax.axvspan(hour - 0.5, hour + 0.5, color=NOT_RECORDED)
    ax.set_xlim(-0.5, 23.5)
    ax.set_ylabel("per hour of audio", fontsize=8)
    ax.legend(handles=[Patch(color=NOT_RECORDED, label="not recorded")], fontsize=7, loc="upper right")


def time_zone(name: str, option: str) -> ZoneInfo:
    """The IANA time zone `name` (Europe/Berlin, UTC), or a ValueError naming the option it was given to."""
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError):  # not found (a KeyError), a path, a folder ("Europe")
        raise ValueError(f"{option} {name!r} is no IANA time zone name (such as Europe/Berlin, Australia/Brisbane, "
                         "UTC)") from None


def activity(run_dir: str | Path, out: str | Path | None = None, min_conf: float | None = None,
             zone: str | None = None, clock_zone: str | None = None) -> Summary:
    """Write activity.csv and activity.png of the run in `run_dir` into `out` (default: the run's folder), in hours
    of the IANA time zone `zone` with recorder clocks that do not say theirs in `clock_zone` (default UTC, as
    AudioMoth's; given alone, it is `zone` too); neither given, hours of each recorder's clock as named."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir
    clock = zone_info = None  # neither given: each recorder's clock as named
    if zone is not None or clock_zone is not None:
        clock = time_zone("UTC" if clock_zone is None else clock_zone, "--clock-timezone")
        zone_info = clock if zone is None else time_zone(zone, "--timezone")
    recordings, undated, elsewhere, labels, run_min_conf = run_recordings(run_dir, clock)
    min_conf = run_min_conf if min_conf is None else min_conf
    if not 0.0 <= min_conf <= 1.0:
        raise ValueError(f"--min-conf is a score between 0 and 1, got {min_conf:g}")
    table = activity_table(recordings, labels.labels, min_conf, zone_info)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "activity.csv", csv_text(ACTIVITY_COLUMNS, table.itertuples(index=False)))
    if len(table):
        save_png(activity_figure(table, min_conf), out / "activity.png")
    detected = table[table["species"] != ""]
    effort_min = table.drop_duplicates(["site", "date", "hour"])["effort_min"].sum()
    return Summary(len(recordings), undated, elsewhere, effort_min * 60, table["site"].nunique(),
                   int(detected["detections"].sum()), detected["species"].nunique())
