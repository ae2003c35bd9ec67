"""Slide readers: pixels and microns per pixel, nothing else.

`open_slide(path)` picks a backend from a name table (OpenSlide for pyramidal formats, PIL via
`openslide.ImageSlide` for plain images). The physical scale comes from the metadata; a given
`mpp` fills in where the metadata has none, or replaces it with `override_mpp` (wrong scanner
headers). A slide with neither fails with a clear `SlideReadError`, never a guessed scale,
because every patch size downstream is derived from it.

A DICOM slide (VL Whole Slide Microscopy) is a folder of .dcm instances, one per pyramid level plus
label, overview and thumbnail; OpenSlide opens the whole series from any one of them. Such a slide is
its folder: `find_slides` gives it once, as one of its files, and `slide_id` names it by the folder; a folder of
two series fails to open, naming it.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Callable, Iterable, Protocol, runtime_checkable

import numpy as np

from export.files import (distinct_tails, files_below, first_of_each_file, hidden, name_within_limit, portable_name,
                          unread_reason)
from export.registry import Registry

log = logging.getLogger(__name__)
# (slide, metadata um/px, --mpp) already told that the metadata wins: a run opens a slide more than once
# (its scale for the resume key, then the slide itself), and says so once
_MPP_NOTED: set[tuple[str, float, float]] = set()

SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif", ".czi",
                  ".dcm", ".png", ".jpg", ".jpeg")  # OpenSlide's formats (CZI: the 4.0.1 library), plain images
MAX_PLAUSIBLE_MPP = 10.0  # coarser than this is a screen DPI default, not a microscope scan
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
# A thumbnail's level up to this size is read whole (OpenSlide's get_thumbnail: about 22 bytes a level pixel at
# once), a larger one band by band: a 20000 x 20000 TIFF without a pyramid took 3.9 GB, a 4096-px heatmap from a
# scan's 6250 x 5000 level 0.7 GB (0.2 GB by bands, in half the time), a whole scan's level 0 would not fit
THUMBNAIL_WHOLE_PX = 2048 * 2048
THUMBNAIL_REGION_PX = 2048


class SlideReadError(RuntimeError):
    """A slide that cannot be opened or read, or has no usable scale; str() is one line."""

    def __init__(self, path: str | Path, message: str):
        super().__init__(f"{path}: {message}")
        self.path, self.reason = str(path), message


@runtime_checkable
class SlideReader(Protocol):
    path: Path
    dimensions: tuple[int, int]  # level-0 (width, height)
    level_count: int
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: float  # level-0 microns per pixel
    mpp_source: str  # "metadata" or "--mpp"

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """RGB uint8 [h, w, 3]; `location` is level-0 (x, y), `size` is (w, h) at `level`."""

    def thumbnail(self, max_size: int) -> np.ndarray:
        """RGB uint8 whose longer side is at most `max_size`."""

    def close(self) -> None: ...

    def __enter__(self) -> "SlideReader": ...

    def __exit__(self, *exc) -> None: ...


READERS: Registry[SlideReader] = Registry("slide reader")


def _rgba_to_rgb(image) -> np.ndarray:
    """Composite onto white: OpenSlide marks pixels outside the scanned area as transparent."""
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
    alpha = rgba[..., 3:4] / 255.0
    return (rgba[..., :3] * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)


def mpp_from_properties(props: dict) -> float | None:
    """Level-0 um/px from OpenSlide properties: openslide.mpp-x, else TIFF resolution tags."""
    try:
        value = float(props["openslide.mpp-x"])
        if value > 0:
            return value
    except (KeyError, ValueError):
        pass
    unit = str(props.get("tiff.ResolutionUnit", "")).lower()
    try:
        resolution = float(props["tiff.XResolution"])
    except (KeyError, ValueError):
        return None
    per_um = {"centimeter": 1e4, "inch": 25400.0}.get(unit)
    if per_um is None or resolution <= 0:
        return None
    return per_um / resolution


# OME's length units in um; "µm" comes with the micro sign (the schema's) or the Greek mu
OME_UNIT_UM = {"m": 1e6, "dm": 1e5, "cm": 1e4, "mm": 1e3, "\u00b5m": 1.0, "\u03bcm": 1.0, "um": 1.0, "nm": 1e-3,
               "pm": 1e-6, "\u00c5": 1e-4, "in": 25400.0}


def ome_mpp(path: Path, dimensions: tuple[int, int]) -> float | None:
    """Level-0 um/px from an OME-TIFF's PhysicalSizeX, of the image with these dimensions: QuPath and Bio-Formats
    write the scale there, and their TIFF resolution tags are unitless or absent. None for any other file."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.is_ome:
                return None
            images = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
        for image in images if isinstance(images, list) else [images]:
            pixels = image["Pixels"]
            if (pixels["SizeX"], pixels["SizeY"]) == tuple(dimensions) and "PhysicalSizeX" in pixels:
                return float(pixels["PhysicalSizeX"]) * OME_UNIT_UM[pixels.get("PhysicalSizeXUnit", "\u00b5m")]
    except (OSError, tifffile.TiffFileError, KeyError, TypeError, ValueError):
        pass
    return None


def metadata_mpp(path: Path, props: dict, dimensions: tuple[int, int]) -> float | None:
    """Level-0 um/px from the slide's own metadata: an OME-TIFF's OME-XML first (its TIFF tags are not where OME
    writers put the scale), else the scanner's properties or TIFF resolution tags."""
    return ome_mpp(path, dimensions) or mpp_from_properties(props)


def mpp_problem(mpp: float) -> str:
    """Why a given microns-per-pixel cannot be a microscope scan's, or "" when it can be."""
    if mpp > 0 and math.isfinite(mpp) and mpp < MAX_PLAUSIBLE_MPP:
        return ""
    return (f"--mpp is level-0 microns per pixel, a positive number: about 0.25 for a 40x scan and 0.5 for 20x; "
            f"got {mpp:g}" + (" (a magnification?)" if mpp >= MAX_PLAUSIBLE_MPP else ""))


def resolve_mpp(path: Path, metadata_mpp: float | None, mpp: float | None, override_mpp: bool) -> tuple[float, str]:
    """Level-0 um/px and its source: `mpp` only where the metadata has none, unless `override_mpp`.

    Metadata coarser than MAX_PLAUSIBLE_MPP (a 72-dpi TIFF reads as 352.8 um/px) counts as none."""
    if mpp is not None and (problem := mpp_problem(mpp)):
        raise SlideReadError(path, problem)
    missing = "no microns-per-pixel in the slide metadata"
    if metadata_mpp is not None and metadata_mpp >= MAX_PLAUSIBLE_MPP:
        missing = f"its metadata's {metadata_mpp:.4g} microns per pixel is a screen resolution, not a scan's"
        metadata_mpp = None
    if mpp is not None and (override_mpp or metadata_mpp is None):
        return float(mpp), "--mpp"
    if metadata_mpp is not None:
        noted = (str(path.resolve()), metadata_mpp, mpp)
        if mpp is not None and not math.isclose(mpp, metadata_mpp, rel_tol=0.01) and noted not in _MPP_NOTED:
            _MPP_NOTED.add(noted)
            log.info("%s: using its metadata's %.4g um/px, not --mpp %g (--override-mpp replaces the metadata)",
                     path, metadata_mpp, mpp)
        return metadata_mpp, "metadata"
    raise SlideReadError(path, f"{missing}; pass --mpp (e.g. --mpp 0.5 for a 20x scan, 0.25 for 40x)")


class _OpenSlideBase:
    """Shared by both backends: both wrap an object with the openslide.AbstractSlide API."""

    def __init__(self, path: Path, slide, metadata_mpp: float | None, mpp: float | None, override_mpp: bool):
        self.path, self._slide = path, slide
        self.dimensions = tuple(slide.dimensions)
        self.level_count = slide.level_count
        self.level_dimensions = tuple(tuple(d) for d in slide.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in slide.level_downsamples)
        try:
            self.mpp, self.mpp_source = resolve_mpp(path, metadata_mpp, mpp, override_mpp)
        except SlideReadError:
            slide.close()
            raise

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        try:
            region = self._slide.read_region((int(location[0]), int(location[1])), int(level),
                                             (int(size[0]), int(size[1])))
        except Exception as exc:  # openslide raises its own types and OSError for bad tiles
            raise SlideReadError(self.path, f"cannot read region {location} level {level}: {exc}") from exc
        return _rgba_to_rgb(region)

    def thumbnail(self, max_size: int) -> np.ndarray:
        level = self._slide.get_best_level_for_downsample(max(self.dimensions) / max_size)
        width, height = self.level_dimensions[level]
        try:
            if width * height <= THUMBNAIL_WHOLE_PX:
                return _rgba_to_rgb(self._slide.get_thumbnail((int(max_size), int(max_size))))
            return self._thumbnail_by_regions(level, int(max_size))
        except Exception as exc:
            raise SlideReadError(self.path, f"cannot read thumbnail: {exc}") from exc

    def _thumbnail_by_regions(self, level: int, max_size: int) -> np.ndarray:
        """The thumbnail of a level too large to read whole (a slide without a pyramid, or a heatmap of 8192 px
        from a scan's /4 level): PIL's thumbnail (box-reduce, then Lanczos) band of rows by band of rows. The level
        is read in strips of regions, box-reduced as they come, and only the reduced rows the next band's
        filter reaches are held, so memory follows the thumbnail, not the level (a 25,000 x 20,000 level reduced by
        nothing was held whole: 1.5 GB)."""
        from PIL import Image

        width, height = self.level_dimensions[level]
        out = _thumbnail_size(width, height, max_size)
        fx, fy = max(1, int(width / out[0] / 2)), max(1, int(height / out[1] / 2))  # PIL's thumbnail reduces first
        step_y = fy * max(1, THUMBNAIL_REGION_PX // 4 // fy)  # strips of 512 rows (a strip and the held rows at once)
        scale = height / fy / out[1]  # reduced rows per thumbnail row
        reach = 3 * max(scale, 1.0) + 1  # Lanczos: 3 widths either side of a centre, 1 row for rounding
        rows = max(1, int(step_y / fy / scale))  # thumbnail rows a band: about one strip
        thumb = Image.new("RGB", out)
        held, held_first = Image.new("RGB", (-(-width // fx), 0)), 0  # reduced rows from held_first on
        for top in range(0, out[1], rows):
            bottom = min(top + rows, out[1])
            first, last = max(int(top * scale - reach), 0), int(bottom * scale + reach) + 1
            while (held_first + held.height) * fy < min(last * fy, height):
                strip = self._reduced_strip(level, fx, fy, (held_first + held.height) * fy, step_y)
                kept = held.crop((0, first - held_first, held.width, held.height))
                held, held_first = Image.new("RGB", (held.width, kept.height + strip.height)), first
                held.paste(kept, (0, 0))
                held.paste(strip, (0, kept.height))
            box = (0, top * scale - held_first, width / fx, bottom * scale - held_first)
            thumb.paste(held.resize((out[0], bottom - top), Image.Resampling.LANCZOS, box=box), (0, top))
        return np.asarray(thumb)

    def _reduced_strip(self, level: int, fx: int, fy: int, top: int, rows: int):
        """Level rows `top` to `top + rows`, read region by region, box-reduced by (fx, fy) and on white as
        get_thumbnail has them."""
        from PIL import Image

        width, height = self.level_dimensions[level]
        step_x = fx * max(1, THUMBNAIL_REGION_PX // fx)
        size_y = min(rows, height - top)
        downsample = self.level_downsamples[level]
        reduced = Image.new("RGB", (-(-width // fx), -(-size_y // fy)))
        for x in range(0, width, step_x):
            size = (min(step_x, width - x), size_y)
            region = self._slide.read_region((round(x * downsample), round(top * downsample)), level, size)
            rgb = Image.new("RGB", size, "white")
            rgb.paste(region, None, region)  # onto white, as get_thumbnail does
            reduced.paste(rgb.reduce((fx, fy)), (x // fx, 0))
        return reduced

    def close(self) -> None:
        self._slide.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path.name}, {self.dimensions}, mpp={self.mpp})"


def _thumbnail_size(width: int, height: int, max_size: int) -> tuple[int, int]:
    """The size PIL's Image.thumbnail gives an image of `width` x `height` in a `max_size` square: its shorter
    side is the one whose aspect ratio comes closest, not always the rounded one (1031 x 221 -> 1024 x 220)."""
    if max_size >= width and max_size >= height:
        return width, height
    aspect = width / height
    if aspect >= 1:
        closest = min(math.floor(max_size / aspect), math.ceil(max_size / aspect),
                      key=lambda n: 0 if n == 0 else abs(aspect - max_size / n))
        return max_size, max(closest, 1)
    closest = min(math.floor(max_size * aspect), math.ceil(max_size * aspect),
                  key=lambda n: abs(aspect - n / max_size))
    return max(closest, 1), max_size


@READERS.register("openslide")
class OpenSlideReader(_OpenSlideBase):
    """Aperio SVS, generic pyramidal TIFF, NDPI, MRXS, ... through openslide-bin."""

    def __init__(self, path: Path, mpp: float | None = None, override_mpp: bool = False):
        import openslide

        try:
            slide = openslide.OpenSlide(str(path))
        except openslide.OpenSlideUnsupportedFormatError:
            raise SlideReadError(path, "not a slide format OpenSlide can read (corrupt or unsupported)") from None
        except openslide.OpenSlideError as exc:
            raise SlideReadError(path, f"OpenSlide cannot open it: {exc}") from exc
        super().__init__(path, slide, metadata_mpp(path, dict(slide.properties), slide.dimensions), mpp, override_mpp)


@READERS.register("image")
class ImageReader(_OpenSlideBase):
    """Plain PNG/JPEG/TIFF held by PIL (one level); scale from its resolution (dpi), OME-XML or --mpp."""

    def __init__(self, path: Path, mpp: float | None = None, override_mpp: bool = False):
        import openslide
        from PIL import Image, UnidentifiedImageError

        # PIL warns of a "decompression bomb DOS attack" from 89 Mpx, half its limit: a slide the user chose, not
        # an attack; past the limit it is an error, said below in the user's terms
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                slide = openslide.ImageSlide(str(path))
            except (UnidentifiedImageError, OSError):
                raise SlideReadError(path, "neither OpenSlide nor PIL can read it (corrupt or unsupported format)"
                                     ) from None
            except Image.DecompressionBombError:  # PIL holds a plain image whole in memory
                raise SlideReadError(path, "a plain image too large to hold in memory; convert it to a tiled "
                                           "pyramidal TIFF (e.g. `vips tiffsave IN OUT --tile --pyramid`)") from None
            with Image.open(path) as image:  # PIL gives TIFF resolution tags, PNG pHYs and JPEG JFIF density as dpi
                dpi = image.info.get("dpi")
        props = {"tiff.ResolutionUnit": "inch", "tiff.XResolution": dpi[0]} if dpi else {}
        super().__init__(path, slide, metadata_mpp(path, props, slide.dimensions), mpp, override_mpp)


def _pick_backend(path: Path) -> str:
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return "image"
    import openslide

    return "openslide" if openslide.OpenSlide.detect_format(str(path)) else "image"


def open_slide(path: str | Path, mpp: float | None = None, override_mpp: bool = False,
               backend: str = "auto") -> SlideReader:
    """Open `path` with the named backend ("auto" chooses from the file); `resolve_mpp` picks the scale."""
    path = Path(path)
    if not path.is_file():
        raise SlideReadError(path, unread_reason(path))
    if is_dicom(path):
        check_one_dicom_series(path)
    name = _pick_backend(path) if backend == "auto" else backend
    factory: Callable[..., SlideReader] = READERS.get(name)
    return factory(path=path, mpp=mpp, override_mpp=override_mpp)


def best_level(level_downsamples: tuple[float, ...], factor: float, tolerance: float = 0.01) -> int:
    """The coarsest pyramid level that is still at least as sharp as `factor` (level-0 px per output px)."""
    best = 0
    for level, downsample in enumerate(level_downsamples):
        if downsample <= factor * (1.0 + tolerance) and downsample >= level_downsamples[best]:
            best = level
    return best


def read_scaled(reader: SlideReader, location: tuple[int, int], size_level0: int, out_px: int) -> np.ndarray:
    """A square level-0 region of side `size_level0`, read from the best level and resized to `out_px`."""
    from PIL import Image

    level = best_level(reader.level_downsamples, size_level0 / out_px)
    read_px = max(1, int(round(size_level0 / reader.level_downsamples[level])))
    region = reader.read_region(location, level, (read_px, read_px))
    if read_px == out_px:
        return region
    return np.array(Image.fromarray(region).resize((out_px, out_px), Image.Resampling.BOX))


def is_dicom(path: str | Path) -> bool:
    return Path(path).suffix.lower() == ".dcm"


def slide_files(path: Path) -> list[Path]:
    """The files of the slide that `path` is one of: itself, or every .dcm instance in its folder (dot names,
    macOS ._ twins, are not instances)."""
    if not is_dicom(path):
        return [path]
    folder = path.absolute().parent
    return [p for p in folder.iterdir() if is_dicom(p) and p.is_file() and not hidden(Path(p.name))] or [path]


def check_one_dicom_series(path: Path) -> None:
    """A SlideReadError naming the folder when its .dcm files hold more than one whole-slide series (an H&E and an
    IHC of one case): OpenSlide reads the series of the file it is given, so the other was passed over without a
    word, and a slide is its folder (one id, one source). Instances that are no WSI (a CT series) do not count."""
    files = sorted(slide_files(path))
    series = _dicom_series(tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))
    if len(series) > 1:
        raise SlideReadError(path.absolute().parent, f"{len(series)} DICOM whole-slide series in one folder (e.g. "
                                                     f"{' and '.join(Path(p).name for p in series)}); a DICOM "
                                                     "slide is its folder, so move each series' .dcm files into a "
                                                     "folder of its own")


@functools.lru_cache(maxsize=64)
def _dicom_series(files: tuple[tuple[str, int, int], ...]) -> tuple[str, ...]:
    """One instance of each whole-slide series among `files` ((path, size, mtime) of a folder's .dcm files). Each
    OpenSlide open reads the folder's every instance, so the check costs n^2 file reads: it is made once per
    folder as it is (a slide is opened several times: its header, its tissue, each loader worker)."""
    import openslide

    series: dict[str, str] = {}
    for file, _, _ in files:
        try:
            if openslide.OpenSlide.detect_format(file):
                with openslide.OpenSlide(file) as slide:
                    series.setdefault(slide.properties.get("dicom.SeriesInstanceUID", ""), file)
        except openslide.OpenSlideError:
            continue  # an instance OpenSlide cannot read fails when it is the one opened
    return tuple(series.values())


def slide_file(path: Path) -> Path:
    """The file that stands for the slide `path` is one of, the same whichever of its files is named: itself, or
    the largest DICOM instance that OpenSlide reads (level 0 in practice, so that outputs and errors name the
    pyramid's base, not its label; a stray non-WSI .dcm is passed over), else the largest; a missing one as is."""
    if not (is_dicom(path) and path.is_file()):
        return path
    import openslide

    files = sorted(slide_files(path), key=lambda p: (-p.stat().st_size, p.name))
    return next((p for p in files if openslide.OpenSlide.detect_format(str(p))), files[0])


def slide_location(path: str | Path) -> Path:
    """What a slide is on disk, resolved: its file, or for DICOM the folder of its instances (the folder of the
    path as named, which OpenSlide searches for the other instances)."""
    path = Path(path).absolute()
    return path.parent.resolve() if is_dicom(path) else path.resolve()


def slide_id(path: str | Path) -> str:
    """The id used for output files and CSV rows: the file name without its suffix, or a DICOM slide's folder name
    (its instances are named by level or by UID, none by the slide)."""
    return _absolute(path).parent.name if is_dicom(path) else Path(path).stem


def slide_file_name(sid: str, suffix: str) -> str:
    """The name of the slide's file `sid` + `suffix` (feature file, grid, mask, prediction) as an SD card, a USB
    drive or Windows takes it (`portable_name`: 'scan 12:00' as 'scan 12_00', CON as CON_), within the file
    system's 255 bytes (`name_within_limit`): the id as it is would be refused by an exFAT or NTFS --out for every
    such slide, and Windows could not copy it."""
    return name_within_limit(portable_name(sid), suffix)


def _file_key(sid: str) -> str:
    """What an id's files are named, as a NAS or Windows share compares names: ids of one key clash."""
    return portable_name(sid).lower()


def _absolute(path: str | Path) -> Path:
    """`path` from the root, without '..' (a DICOM slide given as `..` was named '..', HE.svs given as ../HE.svs beside
    S1/HE.svs '.._HE': hidden outputs) and without resolving links (a year linked in keeps its own name)."""
    return Path(os.path.abspath(path))


class SlideIds:
    """Each slide's id in one batch, and which file holds it: outputs are named by id, so a second file may not reuse
    one. The id is `slide_id`, but slides of one name in different folders (an archive's cases, 2023/S1/HE.svs and
    2024/S1/HE.svs) have as many of their folders' last names as tell them apart before it, joined by '_': 2023_S1_HE
    and 2024_S1_HE. Names differing only in case clash too: a NAS share may not tell HE.json from he.json; so do ids
    whose files are named alike (`slide_file_name`: 'scan 12:00' and 'scan 12_00')."""

    def __init__(self, slides: Iterable[str | Path] = ()):
        self.owners: dict[str, tuple[Path, str]] = {}
        self.names = _distinct_ids(slides)

    def id_of(self, path: str | Path) -> str:
        """The id `path` has in the batch, claimed or not."""
        return self.names.get(slide_location(path)) or slide_id(path)

    def claim(self, path: str | Path) -> str:
        """The id of `path`; a SlideReadError naming both files, and the one to rename, when an earlier slide of the
        batch has it. he.svs beside HE.svs fails too: one stable id for each could only come from the batch (he_2
        when both are given, he when it is alone), and on a NAS share --out holds one file for HE.json and he.json."""
        sid = self.id_of(path)
        owner, owner_id = self.owners.setdefault(_file_key(sid), (Path(path), sid))
        if slide_location(owner) != slide_location(path):
            if owner_id.lower() == sid.lower():
                case = " (ids ignore case, as a NAS or Windows share's file names do)" if owner_id != sid else ""
                clash = f"slide id '{sid}' is already used by {owner} in this batch{case}"
            else:  # 'scan 12:00' beside 'scan 12_00', CON beside CON_
                clash = (f"slide ids '{sid}' and '{owner_id}' (of {owner}, in this batch) name their files alike: "
                         f"'{portable_name(sid)}', as an SD card, a USB drive or Windows takes them")
            named = _absolute(path).parent if is_dicom(path) else Path(path)  # what the id comes from
            raise SlideReadError(path, f"{clash}; outputs are named by id, so rename {named.name} or give it its "
                                       "own --out")
        return sid


def _distinct_ids(slides: Iterable[str | Path]) -> dict[Path, str]:
    """The ids of slides (by `slide_location`) whose `slide_id`s clash, with their folders' distinct last names."""
    same_id: dict[str, dict[Path, Path]] = {}
    for path in map(Path, slides):
        same_id.setdefault(_file_key(slide_id(path)), {})[slide_location(path)] = path
    names = {}
    for group in (group for group in same_id.values() if len(group) > 1):
        folders = {location: _absolute(path).parent.parent if is_dicom(path) else _absolute(path).parent
                   for location, path in group.items()}
        if len(set(folders.values())) == 1:  # HE.svs beside HE.tif: no folder tells them apart, the first keeps HE
            continue
        tails = distinct_tails(set(folders.values()))
        names |= {location: "_".join((*tails[folders[location]].parts, slide_id(path)))
                  for location, path in group.items()}
    return names


def slide_source(path: str | Path) -> dict:
    """What identifies the slide behind an output, so that another slide or a rescan at the same id differs: its
    location, and the total size and latest change of its files (all the instances of a DICOM slide)."""
    path = Path(path)
    if not path.is_file():
        raise SlideReadError(path, unread_reason(path))
    stats = [p.stat() for p in slide_files(path)]
    return {"path": str(slide_location(path)), "size": sum(s.st_size for s in stats),
            "mtime_ns": max(s.st_mtime_ns for s in stats)}


def check_not_another_slides(output: str | Path, path: str | Path, recorded: dict) -> None:
    """A SlideReadError when `output` (named by slide id) was made from another file that is still there, so that
    a later run into the same --out does not replace another archive's slide of the same name. A recorded file
    that is gone was moved or renamed: its output is redone."""
    owner = recorded.get("path") if isinstance(recorded, dict) else None
    location = slide_location(path)
    if owner and owner != str(location) and Path(owner).exists():
        # slides in other folders got one id because each was given without the other (2023/ in one run, 2024/ in
        # the next): given together, each gets its folders' names (2023_S1_HE, 2024_S1_HE)
        remedy = ("ids depend on the slides given together, so give both, or their folders, in one run (each then "
                  "gets its folders' names)" if Path(owner).parent != location.parent else "rename one of the files")
        raise SlideReadError(path, f"{output} holds the outputs of {owner}, another slide with the id "
                                   f"'{Path(output).stem}'; {remedy}, give each its own --out, or delete that output "
                                   "to replace it")


def find_slides(inputs: list[str | Path], recursive: bool = False) -> list[Path]:
    """Files as given, plus the whole-slide files (by suffix, sorted) directly inside any folder given, or anywhere
    below it if `recursive`, as `export.files.files_below` lists them (archives kept a folder per case, a year linked in
    from another drive; a link to nothing and a folder that cannot be listed are listed, to fail naming them); each file
    once, a hard link to it or a link to its folder too. Plain images (PNG, JPEG) in a folder are thumbnails and label
    photos more often than slides: they are skipped with a note, and read as slides only when named as files. The .dcm
    files of a folder are one DICOM slide, given once, whether the folder or any of them is named."""
    found, picked = [], {}  # found: (path, in a linked folder); picked: a DICOM slide's folder -> its file
    for item in map(Path, inputs):
        if item.is_dir():
            files, unread = files_below(item, SLIDE_SUFFIXES, recursive)
            paths = [(p, linked) for p, linked in files
                     if p.suffix.lower() in SLIDE_SUFFIXES and p.suffix.lower() not in IMAGE_SUFFIXES] + unread
            if images := [p for p, _ in files if p.suffix.lower() in IMAGE_SUFFIXES]:
                log.info("%s: %d plain image(s) skipped (e.g. %s); name an image as a file to read it as a slide",
                         item, len(images), images[0].name)
        else:
            paths = [(item, False)]  # missing files are reported by the job, not dropped here
        for path, linked in paths:
            if is_dicom(path) and path.is_file():  # its slide's file is picked once, not once for each instance
                folder = path.absolute().parent
                if folder not in picked:
                    picked[folder] = slide_file(path)
                path = picked[folder]
            found.append((path, linked))
    return [found[i][0] for i in first_of_each_file(found)]
