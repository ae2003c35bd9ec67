"""Slide readers on the real fixtures (CMU-1, no-MPP TCGA, broken.svs) and on tiny generated files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lrmil.slide import (SlideIds, SlideReadError, best_level, check_not_another_slides, find_slides, open_slide,
                         read_scaled, slide_id, slide_source)

SLIDES = "slides"
WSI_STORAGE = "1.2.840.10008.5.1.4.1.1.77.1.6"  # VL Whole Slide Microscopy Image Storage


def _dicom_instance(path, pixels, image_type, series, mpp, tile=128):
    """One VL WSI instance, TILED_FULL and uncompressed, with the attributes OpenSlide 4 checks."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds, measures, shared = Dataset(), Dataset(), Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = WSI_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality, ds.ImageType = generate_uid(), series, "SM", image_type
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    h, w = pixels.shape[:2]
    across, down = -(-w // tile), -(-h // tile)
    ds.Rows = ds.Columns = tile
    ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows, ds.TotalPixelMatrixFocalPlanes = w, h, 1
    ds.DimensionOrganizationType, ds.NumberOfFrames, ds.NumberOfOpticalPaths = "TILED_FULL", across * down, 1
    measures.PixelSpacing, measures.SliceThickness = [mpp / 1000, mpp / 1000], 0.004  # in mm
    shared.PixelMeasuresSequence = Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    padded = np.full((down * tile, across * tile, 3), 255, np.uint8)
    padded[:h, :w] = pixels
    ds.PixelData = padded.reshape(down, tile, across, tile, 3).transpose(0, 2, 1, 3, 4).tobytes()  # row-major tiles
    ds.save_as(path, enforce_file_format=True)


def dicom_slide(folder, size=512, mpp=0.5, prefix=""):
    """A DICOM whole-slide image as scanners export it: a folder of one series' instances (level 0, level 1 at
    half size, a label; their names after `prefix`), a pink tissue disc on white at `mpp` level-0 microns per pixel.
    Returns the folder."""
    from pydicom.uid import generate_uid

    yy, xx = np.mgrid[:size, :size]
    disc = (xx - size / 2) ** 2 + (yy - size / 2) ** 2 < (size * 0.4) ** 2
    noise = np.random.default_rng(0).integers(-20, 20, (size, size, 3))
    image = np.where(disc[..., None], np.array([200, 110, 170]) + noise, 245).astype(np.uint8)
    series = generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    _dicom_instance(folder / f"{prefix}level0.dcm", image, ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"], series, mpp)
    _dicom_instance(folder / f"{prefix}level1.dcm", image[::2, ::2], ["DERIVED", "PRIMARY", "VOLUME", "RESAMPLED"],
                    series, 2 * mpp)
    _dicom_instance(folder / f"{prefix}label.dcm", np.full((96, 96, 3), 30, np.uint8),
                    ["ORIGINAL", "PRIMARY", "LABEL", "NONE"], series, 0.1, tile=96)
    return folder


def test_cmu1_reads_with_metadata_mpp(shared_data):
    with open_slide(shared_data / SLIDES / "CMU-1-Small-Region.svs") as reader:
        assert reader.dimensions == (2220, 2967)
        assert reader.level_count == 1 and reader.level_downsamples == (1.0,)
        assert reader.mpp == pytest.approx(0.499)
        region = reader.read_region((100, 200), 0, (64, 48))
        assert region.shape == (48, 64, 3) and region.dtype == np.uint8
        thumb = reader.thumbnail(256)
        assert max(thumb.shape[:2]) == 256 and thumb.shape[2] == 3
        assert 0 < thumb.std()  # real tissue, not a blank image


def test_no_mpp_slide_fails_clearly_and_works_with_override(shared_data):
    path = shared_data / SLIDES / "TCGA-CR-7395-01A-01-TS1-no-mpp.svs"
    with pytest.raises(SlideReadError) as info:
        open_slide(path)
    message = str(info.value)
    assert "\n" not in message and path.name in message and "--mpp" in message
    with open_slide(path, mpp=0.25) as reader:
        assert reader.mpp == 0.25 and reader.mpp_source == "--mpp"
        assert reader.level_count == 2
        patch = read_scaled(reader, (1000, 1000), 512, 256)  # read from level 1 (downsample ~2)
        assert patch.shape == (256, 256, 3)


def test_broken_and_missing_files_raise_one_line(shared_data, tmp_path):
    for path in (shared_data / SLIDES / "broken.svs", tmp_path / "nope.svs"):
        with pytest.raises(SlideReadError) as info:
            open_slide(path)
        assert "\n" not in str(info.value) and path.name in str(info.value)


def test_bad_override_is_rejected(shared_data):
    with pytest.raises(SlideReadError, match="positive"):
        open_slide(shared_data / SLIDES / "CMU-1-Small-Region.svs", mpp=-1.0)


def test_mpp_fills_in_missing_metadata_and_replaces_it_only_when_forced(shared_data):
    cmu = shared_data / SLIDES / "CMU-1-Small-Region.svs"
    with open_slide(cmu, mpp=1.0) as reader:  # a mixed batch's --mpp leaves a correct header alone
        assert reader.mpp == pytest.approx(0.499) and reader.mpp_source == "metadata"
    with open_slide(cmu, mpp=1.0, override_mpp=True) as reader:  # a wrong scanner header
        assert reader.mpp == 1.0 and reader.mpp_source == "--mpp"


def test_metadata_winning_over_mpp_is_said_once_per_slide(shared_data, caplog):
    cmu = shared_data / SLIDES / "CMU-1-Small-Region.svs"
    with caplog.at_level("INFO", logger="lrmil.slide"):
        for _ in range(2):  # `lrmil predict` opens a slide for its resume key, then to predict it
            with open_slide(cmu, mpp=0.3):
                pass
    notes = [r.getMessage() for r in caplog.records if "not --mpp 0.3" in r.getMessage()]
    assert len(notes) == 1 and cmu.name in notes[0]


def test_png_needs_mpp_unless_it_has_a_resolution_and_tiff_resolution_is_used(tmp_path):
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[:, :, 0] = np.arange(60, dtype=np.uint8)[None] * 4
    Image.fromarray(rgb).save(tmp_path / "a.png")
    with pytest.raises(SlideReadError, match="--mpp"):
        open_slide(tmp_path / "a.png")
    with open_slide(tmp_path / "a.png", mpp=0.5) as reader:
        assert reader.dimensions == (60, 40) and reader.mpp == 0.5
        np.testing.assert_array_equal(reader.read_region((0, 0), 0, (60, 40)), rgb)
    # plain (untiled) TIFF with resolution in pixels per centimetre: 20000 px/cm = 0.5 um/px
    Image.fromarray(rgb).save(tmp_path / "b.tif", resolution_unit=3, resolution=20000.0)
    with open_slide(tmp_path / "b.tif") as reader:
        assert reader.mpp == pytest.approx(0.5)
    for name in ("c.png", "c.jpg"):  # PNG pHYs, JPEG JFIF density: 50800 dpi = 0.5 um/px
        Image.fromarray(rgb).save(tmp_path / name, dpi=(50800, 50800))
        with open_slide(tmp_path / name) as reader:
            assert (reader.mpp, reader.mpp_source) == (pytest.approx(0.5), "metadata")


def test_screen_dpi_is_not_taken_as_a_scale(tmp_path):
    import tifffile

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "c.tif", resolution_unit=2, resolution=72.0)
    # tiled, so OpenSlide reads it and reports openslide.mpp-x itself: 25400 / 72 = 352.8 um/px
    tifffile.imwrite(tmp_path / "tiled.tif", np.zeros((64, 64, 3), np.uint8), tile=(16, 16), resolution=(72, 72),
                     resolutionunit="INCH")
    for name in ("c.tif", "tiled.tif"):
        with pytest.raises(SlideReadError, match="--mpp") as info:
            open_slide(tmp_path / name)
        assert "352.8 microns per pixel is a screen resolution" in str(info.value)
        with open_slide(tmp_path / name, mpp=0.5) as reader:  # --mpp fills in, as for a slide without metadata
            assert (reader.mpp, reader.mpp_source) == (0.5, "--mpp")
    with pytest.raises(SlideReadError, match="got 20 \\(a magnification\\?\\)"):
        open_slide(tmp_path / "tiled.tif", mpp=20.0)  # refused here too, not only by the CLI (the lab app's field)


def test_ome_tiff_scale_is_read_from_its_ome_xml(tmp_path):
    import tifffile

    rgb = np.full((64, 96, 3), 200, np.uint8)
    # QuPath / Bio-Formats: the scale only in the OME-XML (tifffile's own resolution tags are unitless), the reduced
    # levels in SubIFDs; tiled, so OpenSlide opens it, and stripped, so PIL does
    with tifffile.TiffWriter(tmp_path / "qupath.ome.tif", ome=True) as tif:
        tif.write(rgb, tile=(16, 16), subifds=1, metadata={"axes": "YXS", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25})
        tif.write(rgb[::4, ::4], tile=(16, 16), subfiletype=1)
    tifffile.imwrite(tmp_path / "flat.ome.tif", rgb, ome=True,
                     metadata={"axes": "YXS", "PhysicalSizeX": 500, "PhysicalSizeXUnit": "nm"})
    for name, mpp in (("qupath.ome.tif", 0.25), ("flat.ome.tif", 0.5)):
        with open_slide(tmp_path / name) as reader:
            assert (reader.mpp, reader.mpp_source) == (pytest.approx(mpp), "metadata")


@pytest.mark.parametrize("size, unit", [(5000, "\u00c5"), (500000, "pm"), (0.5 / 25400, "in")])
def test_ome_tiff_scale_in_other_ome_length_units_is_read(tmp_path, size, unit):
    """A PhysicalSizeXUnit outside the table (OME allows Å, pm, inches...) was 'no microns-per-pixel in the slide
    metadata; pass --mpp', though the file holds its scale."""
    import tifffile

    tifffile.imwrite(tmp_path / "x.ome.tif", np.full((64, 96, 3), 200, np.uint8), ome=True,
                     metadata={"axes": "YXS", "PhysicalSizeX": size, "PhysicalSizeXUnit": unit})
    with open_slide(tmp_path / "x.ome.tif") as reader:
        assert (reader.mpp, reader.mpp_source) == (pytest.approx(0.5), "metadata")


def test_ome_xml_scale_comes_before_a_72_dpi_resolution_tag(tmp_path):
    """An OME-TIFF whose writer also left 72 dpi in the TIFF tags: the OME-XML's PhysicalSizeX is its scale."""
    import tifffile

    tifffile.imwrite(tmp_path / "x.ome.tif", np.full((64, 96, 3), 200, np.uint8), ome=True, tile=(16, 16),
                     resolution=(72, 72), resolutionunit="INCH", metadata={"axes": "YXS", "PhysicalSizeX": 0.25})
    with open_slide(tmp_path / "x.ome.tif") as reader:
        assert (reader.mpp, reader.mpp_source) == (pytest.approx(0.25), "metadata")


def test_a_thumbnail_by_regions_is_the_whole_one_with_transparency_and_uneven_reduction(tmp_path, monkeypatch):
    """Transparent pixels (outside a scan's area) go white, as OpenSlide's get_thumbnail has them; regions that
    are no multiple of the reduction factor (here 3) must not shift the box-reduction's blocks."""
    from lrmil import slide

    rgba = np.random.default_rng(1).integers(0, 256, (200, 300, 4), np.uint8)
    rgba[:, :100, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "core.png")
    with open_slide(tmp_path / "core.png", mpp=0.5) as reader:
        expected = reader.thumbnail(50)  # 300 / 50 / 2: reduced by 3 first
        monkeypatch.setattr(slide, "THUMBNAIL_WHOLE_PX", 64 * 64, raising=False)
        monkeypatch.setattr(slide, "THUMBNAIL_REGION_PX", 64, raising=False)
        np.testing.assert_array_equal(reader.thumbnail(50), expected)
    assert (expected[:, :10] > 200).all()  # the transparent third is white


def test_a_plain_image_too_large_for_pil_fails_as_one_slide(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL refuses above twice this: 64 x 64 stands in for 180 Mpx
    with pytest.raises(SlideReadError, match="huge.png: a plain image too large .* pyramidal TIFF"):
        open_slide(tmp_path / "huge.png", mpp=0.5)


def test_a_plain_image_between_pil_warning_and_limit_opens_without_talk_of_an_attack(tmp_path, monkeypatch):
    """PIL warns of a 'decompression bomb DOS attack' from half its limit (89 Mpx): a slide the user chose."""
    import warnings

    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "core.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # 4096 px: over the warning's size, under twice it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with open_slide(tmp_path / "core.png", mpp=0.5) as reader:
            assert reader.dimensions == (64, 64)


def test_thumbnail_of_a_level_too_large_to_read_whole_is_read_by_regions(tmp_path, monkeypatch):
    import tifffile

    from lrmil import slide

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (200, 300, 3), np.uint8)
    tifffile.imwrite(tmp_path / "flat.tif", rgb, tile=(16, 16), compression="zlib")  # tiled, one level: generic TIFF
    Image.fromarray(rgb).save(tmp_path / "core.png")  # PIL's
    for name in ("flat.tif", "core.png"):
        with open_slide(tmp_path / name, mpp=0.5) as reader:
            expected = reader.thumbnail(37)  # read whole, as OpenSlide's get_thumbnail does
            read, sizes = reader._slide.read_region, []
            reader._slide.read_region = lambda loc, level, size: sizes.append(size) or read(loc, level, size)
            # 300 x 200 stands in for a whole scan's level 0, 64 x 64 regions for 2048 x 2048
            monkeypatch.setattr(slide, "THUMBNAIL_WHOLE_PX", 64 * 64, raising=False)
            monkeypatch.setattr(slide, "THUMBNAIL_REGION_PX", 64, raising=False)
            np.testing.assert_array_equal(reader.thumbnail(37), expected)
            assert max(w * h for w, h in sizes) <= 64 * 64
            monkeypatch.undo()


def test_a_thumbnail_read_by_regions_has_the_size_of_one_read_whole(tmp_path, monkeypatch):
    """1031 x 221 px in 1024: PIL's thumbnail is 1024 x 220 (the closest aspect), the regions' one was 1024 x 219
    (rounded), so a flat TIFF's tissue mask and heatmap changed size with the way it was read."""
    from lrmil import slide

    rgb = np.random.default_rng(0).integers(0, 256, (221, 1031, 3), np.uint8)
    Image.fromarray(rgb).save(tmp_path / "core.png")
    with open_slide(tmp_path / "core.png", mpp=0.5) as reader:
        expected = reader.thumbnail(1024)
        monkeypatch.setattr(slide, "THUMBNAIL_WHOLE_PX", 64 * 64, raising=False)
        monkeypatch.setattr(slide, "THUMBNAIL_REGION_PX", 256, raising=False)
        by_regions = reader.thumbnail(1024)
    assert by_regions.shape == expected.shape == (220, 1024, 3)
    assert np.abs(by_regions.astype(int) - expected).max() <= 1  # bands of rows: within one level


def test_a_thumbnail_by_regions_holds_bands_not_the_level(tmp_path, monkeypatch):
    """A heatmap of 8192 px comes from a scan's /4 level (25,000 x 20,000), reduced by nothing first: held whole it
    took 1.5 GB. Band by band (here 1200 x 800 in 320 px, 16-px regions, bands of a few rows) it is the same
    image within one level (each band's Lanczos box is offset in floating point: 7 of 204,480 values differ), and
    no image made on the way is larger than two thumbnails."""
    from lrmil import slide

    rgba = np.random.default_rng(2).integers(0, 256, (800, 1200, 4), np.uint8)
    rgba[:300, :, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "core.png")
    with open_slide(tmp_path / "core.png", mpp=0.5) as reader:
        expected = reader.thumbnail(320)
        new, sizes = Image.new, []
        monkeypatch.setattr(Image, "new", lambda mode, size, *a, **k: sizes.append(size) or new(mode, size, *a, **k))
        monkeypatch.setattr(slide, "THUMBNAIL_WHOLE_PX", 64 * 64, raising=False)
        monkeypatch.setattr(slide, "THUMBNAIL_REGION_PX", 16, raising=False)
        banded = reader.thumbnail(320)
    assert banded.shape == expected.shape == (213, 320, 3)
    assert np.abs(banded.astype(int) - expected).max() <= 1
    assert max(w * h for w, h in sizes) <= 2 * 320 * 213


def test_best_level_picks_coarsest_sharp_enough_level():
    downsamples = (1.0, 2.0, 4.0, 16.0)
    assert best_level(downsamples, 1.0) == 0
    assert best_level(downsamples, 3.0) == 1
    assert best_level(downsamples, 4.0) == 2
    assert best_level(downsamples, 4.0 * 1.004) == 2
    assert best_level((1.0, 2.0005), 2.0) == 1  # a TCGA-style inexact downsample still counts
    assert best_level(downsamples, 100.0) == 3


def test_find_slides_expands_folders(tmp_path, caplog):
    caplog.set_level("INFO", logger="lrmil.slide")
    for name in ("b.svs", "a.tiff", "c.czi", "notes.txt", "thumb.png", "label.jpg"):
        (tmp_path / name).write_bytes(b"x")
    found = find_slides([tmp_path, tmp_path / "missing.svs", tmp_path / "b.svs"])  # b.svs named twice: once
    # a folder's plain images are skipped...
    assert [p.name for p in found] == ["a.tiff", "b.svs", "c.czi", "missing.svs"]
    assert "2 plain image(s) skipped" in caplog.text
    assert [p.name for p in find_slides([tmp_path / "thumb.png"])] == ["thumb.png"]  # ...unless named


def test_find_slides_searches_subfolders_only_when_recursive(tmp_path):
    for name in ("top.svs", "case1/a.svs", "case2/deep/b.ndpi", "case2/thumb.png", ".Trashes/old.svs",
                 "case1/._a.svs"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in find_slides([tmp_path])] == ["top.svs"]
    found = find_slides([tmp_path], recursive=True)  # dot names (a bin, macOS ._ twins) are not slides
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["case1/a.svs", "case2/deep/b.ndpi", "top.svs"]


def test_an_archive_on_a_nas_is_listed_each_slide_once_and_what_is_missed_fails(tmp_path, unlistable):
    """A slide archive by year: a year linked in from another drive was passed over in silence, so was a year
    whose drive was not mounted, a link to a slide on it and a colleague's folder that cannot be listed (exit
    status 0; later a warning, still exit status 0); a slide and a hard link to it were both read, and so were
    Windows' recycle bin ($R...svs, and the few bytes of $I...svs beside it, which failed) and System Volume
    Information."""
    import os

    archive = tmp_path / "archive"
    for name in ("2023/S1/HE.svs", "2024/S2/HE.SVS", "locked/S9/x.svs", "$RECYCLE.BIN/S-1-5-21/$RABC.svs",
                 "$RECYCLE.BIN/S-1-5-21/$IABC.svs", "System Volume Information/tracking.tif", "2024/S2/._HE.SVS"):
        (archive / name).parent.mkdir(parents=True, exist_ok=True)
        (archive / name).write_bytes(b"x")
    (tmp_path / "drive2" / "2022" / "S5").mkdir(parents=True)
    (tmp_path / "drive2" / "2022" / "S5" / "old.ndpi").write_bytes(b"x")
    (archive / "2022").symlink_to(tmp_path / "drive2" / "2022")
    (archive / "2021").symlink_to(tmp_path / "unmounted" / "2021")
    (archive / "2024" / "S2" / "from2021.svs").symlink_to(tmp_path / "unmounted" / "2021" / "a.svs")
    os.link(archive / "2023" / "S1" / "HE.svs", archive / "2023" / "S1" / "HE_copy.svs")
    (archive / "2023" / "loop").symlink_to(archive)
    unlistable("locked")
    found = find_slides([archive], recursive=True)
    assert [p.relative_to(archive).as_posix() for p in found] == [
        "2022/S5/old.ndpi", "2023/S1/HE.svs", "2024/S2/HE.SVS", "2021", "2024/S2/from2021.svs", "locked"]
    with pytest.raises(SlideReadError, match=f"2021: a link to {tmp_path / 'unmounted' / '2021'}, which is not there"):
        open_slide(found[3])
    with pytest.raises(SlideReadError, match="from2021.svs: a link to .*a.svs, which is not there"):
        open_slide(found[4])
    with pytest.raises(SlideReadError, match=r"locked: a folder that cannot be searched \(Permission denied\)"):
        open_slide(found[5])


def test_a_second_file_with_a_taken_slide_id_fails_naming_both(tmp_path):
    ids = SlideIds()
    assert ids.claim(tmp_path / "a" / "slide.svs") == "slide" and ids.claim(tmp_path / "other.svs") == "other"
    assert ids.claim(tmp_path / "a" / "slide.svs") == "slide"  # the same file again is no clash
    with pytest.raises(SlideReadError) as info:
        ids.claim(tmp_path / "b" / "slide.tiff")
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "a" / "slide.svs") in message
    assert message.startswith(str(tmp_path / "b" / "slide.tiff"))


def test_slides_of_one_name_in_case_folders_get_their_folders_names(tmp_path):
    """2023/S1/HE.svs and 2024/S1/HE.svs, a DICOM slide folder HE in a third case: the second and third failed as
    ids taken. Ids that do not clash stay as they were."""
    for name in ("2023/S1/HE.svs", "2024/S1/HE.svs", "2024/S2/other.svs"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    dicom = dicom_slide(tmp_path / "2024" / "S3" / "he") / "level0.dcm"
    slides = [tmp_path / "2023/S1/HE.svs", tmp_path / "2024/S1/HE.svs", tmp_path / "2024/S2/other.svs", dicom]
    ids = SlideIds(slides)
    assert [ids.claim(p) for p in slides] == ["2023_S1_HE", "2024_S1_HE", "other", "S3_he"]
    assert ids.claim(tmp_path / "2023/S1/HE.svs") == "2023_S1_HE"  # the same file again is no clash


def test_a_slide_beside_another_of_its_name_keeps_its_id(tmp_path):
    """HE.svs and HE.tif in one case folder: no folder tells them apart, so the first keeps 'HE' (the id its feature
    files and splits rows have) and the second fails as before; it became case7_HE, which matched none of them.
    So does he.svs beside them: a NAS share, or a Mac's disk, holds one file for HE.json and he.json."""
    for name in ("case7/HE.svs", "case7/HE.tif", "case7/he.svs"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    slides = find_slides([tmp_path / "case7"])
    ids = SlideIds(slides)
    assert ids.claim(slides[0]) == "HE"
    for other in slides[1:]:
        with pytest.raises(SlideReadError, match=f"slide id '{slide_id(other)}' is already used by .*HE.svs") as info:
            ids.claim(other)
        assert f"so rename {other.name} or give it its own --out" in str(info.value)  # the one to rename, by name


def test_slides_whose_files_would_be_named_alike_are_told_apart(tmp_path):
    """'scan 12:00.svs' and 'scan 12_00.svs', CON.svs and con_.svs: their files are named alike (`slide_file_name`),
    and the second overwrote the first's. In one folder the second fails naming the first; in two, each gets its
    folder's name, as slides of one name do."""
    names = ("a/scan 12:00.svs", "a/scan 12_00.svs", "b/CON.svs", "c/con_.svs", "c/COM1.svs")
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    slides = [tmp_path / name for name in names]
    ids = SlideIds(slides)
    assert [ids.claim(p) for p in slides[2:]] == ["b_CON", "c_con_", "COM1"]
    assert ids.claim(slides[0]) == "scan 12:00"
    with pytest.raises(SlideReadError, match=re.escape("slide ids 'scan 12_00' and 'scan 12:00' (of "
                                                       f"{slides[0]}, in this batch) name their files alike: "
                                                       "'scan 12_00'")):
        ids.claim(slides[1])


def test_a_slide_whose_name_differs_only_in_case_fails_saying_ids_ignore_case(tmp_path):
    """he.svs beside HE.svs, two slides on Linux: 'slide id 'he' is already used by HE.svs' read as a bug there."""
    for name in ("case7/HE.svs", "case7/he.svs"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(name.encode())
    first, second = find_slides([tmp_path / "case7"])
    ids = SlideIds([first, second])
    assert ids.claim(first) == "HE"
    with pytest.raises(SlideReadError) as info:
        ids.claim(second)
    assert str(info.value) == (
        f"{second}: slide id 'he' is already used by {first} in this batch (ids ignore case, as a NAS or Windows "
        "share's file names do); outputs are named by id, so rename he.svs or give it its own --out")


def test_slides_given_through_dot_dot_are_named_by_their_folders(tmp_path, monkeypatch):
    """Run from inside 2023/S1 on HE.svs and ../HE.svs, the second's outputs were .._HE.json and the like (hidden,
    and named by no folder); a DICOM slide given as `..` was named '..'."""
    for name in ("2023/S1/HE.svs", "2023/HE.svs"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (dicom_slide(tmp_path / "2023" / "S1" / "case9" / "dcm") / "deeper").mkdir()
    monkeypatch.chdir(tmp_path / "2023" / "S1")
    slides = [Path("HE.svs"), Path("../HE.svs")]
    ids = SlideIds(slides)
    assert [ids.claim(p) for p in slides] == ["S1_HE", "2023_HE"]
    monkeypatch.chdir(tmp_path / "2023" / "S1" / "case9" / "dcm" / "deeper")
    assert [slide_id(p) for p in find_slides([".."])] == ["dcm"]


def test_a_later_slide_beside_one_whose_outputs_hold_its_id_is_told_to_rename(tmp_path):
    """HE.svs, then HE.tif beside it in a later run into the same --out: one run with both fails as well."""
    for name in ("case7/HE.svs", "case7/HE.tif"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(name.encode())
    with pytest.raises(SlideReadError, match="HE.json holds the outputs of .*HE.svs, another slide with the id 'HE'; "
                                             "rename one of the files, give each its own --out, or delete"):
        check_not_another_slides(tmp_path / "out" / "HE.json", tmp_path / "case7/HE.tif",
                                 slide_source(tmp_path / "case7/HE.svs"))


def test_slide_source_tells_a_rescan_at_the_same_path_apart(tmp_path):
    path = tmp_path / "s.svs"
    path.write_bytes(b"first scan")
    before = slide_source(path)
    assert before == slide_source(path) and before["path"] == str(path.resolve())
    path.write_bytes(b"second scan, longer")
    assert slide_source(path) != before
    with pytest.raises(SlideReadError, match="no such file or folder"):
        slide_source(tmp_path / "gone.svs")


def test_a_dicom_series_opens_from_any_of_its_instances_with_levels_and_scale(tmp_path):
    """What the DICOM tests below rely on: OpenSlide reads the written series, given any of its files."""
    folder = dicom_slide(tmp_path / "case7")
    for name in ("level0.dcm", "level1.dcm", "label.dcm"):
        with open_slide(folder / name) as reader:
            assert reader.level_dimensions == ((512, 512), (256, 256)) and reader.level_downsamples == (1.0, 2.0)
            assert (reader.mpp, reader.mpp_source) == (pytest.approx(0.5), "metadata")  # from PixelSpacing
            assert tuple(reader.read_region((256, 256), 1, (1, 1))[0, 0]) != (245, 245, 245)  # the disc, not glass


def test_a_folder_of_dicom_instances_is_one_slide_named_by_the_folder(tmp_path):
    """A DICOM WSI is a folder of instances (levels, label): each used to be a slide of its own, by file name."""
    case7 = dicom_slide(tmp_path / "archive" / "case7")
    dicom_slide(tmp_path / "archive" / "case8")  # the same instance names in another case
    (case7 / "._level0.dcm").write_bytes(b"macOS twin")
    (case7 / "notes.dcm").write_bytes(b"not a DICOM WSI" * 100_000)  # a stray .dcm, larger, is not the slide's

    def found(*inputs, recursive=False):
        return [(p.relative_to(tmp_path).as_posix(), slide_id(p)) for p in find_slides(inputs, recursive)]

    one = [("archive/case7/level0.dcm", "case7")]  # level 0 stands for the slide in outputs and errors
    assert found(case7) == one  # the folder given is the slide
    assert found(case7 / "label.dcm", case7 / "level1.dcm", case7) == one  # any instance named: its slide, once
    assert found(tmp_path / "archive", recursive=True) == one + [("archive/case8/level0.dcm", "case8")]
    with open_slide(find_slides([case7])[0]) as reader:
        assert reader.level_count == 2

    ids = SlideIds()
    assert ids.claim(case7 / "level0.dcm") == ids.claim(case7 / "level1.dcm") == "case7"  # one slide, not a clash
    (tmp_path / "elsewhere").mkdir()
    other7 = dicom_slide(tmp_path / "elsewhere" / "case7")
    with pytest.raises(SlideReadError, match=f"slide id 'case7' is already used by {case7 / 'level0.dcm'} in this "
                                             "batch; outputs are named by id, so rename case7 or give it its own"):
        ids.claim(other7 / "level0.dcm")  # the folder names the slide: its instances' names are no help


def test_two_dicom_series_in_one_folder_fail_naming_the_folder(tmp_path):
    """An H&E and an IHC of one case exported into one folder: the IHC was passed over without a word (OpenSlide
    reads the series of the file it is given), whichever of its files was named."""
    case7 = dicom_slide(tmp_path / "case7", prefix="he_")
    dicom_slide(case7, size=384, prefix="ihc_")
    (case7 / "notes.dcm").write_bytes(b"not a DICOM WSI")  # no series of its own
    assert find_slides([case7]) == [case7 / "he_level0.dcm"]
    for named in ("he_level0.dcm", "ihc_level0.dcm"):
        with pytest.raises(SlideReadError) as info:
            open_slide(case7 / named)
        assert str(info.value) == (f"{case7}: 2 DICOM whole-slide series in one folder (e.g. he_label.dcm and "
                                   "ihc_label.dcm); a DICOM slide is its folder, so move each series' .dcm files into "
                                   "a folder of its own")
    (tmp_path / "ihc7").mkdir()
    for path in sorted(case7.glob("ihc_*")):
        path.rename(tmp_path / "ihc7" / path.name)
    for folder, size in ((case7, 512), (tmp_path / "ihc7", 384)):
        (found,) = find_slides([folder])
        with open_slide(found) as reader:
            assert reader.dimensions == (size, size)


def test_a_dicom_folder_s_series_are_read_once_while_its_files_stay_as_they_are(tmp_path, monkeypatch):
    """A slide is opened several times (its header, its tissue, each loader worker), and each series check opened
    every instance, each open reading the whole folder: the check is made again only once a file changes."""
    import os

    import openslide

    case7 = dicom_slide(tmp_path / "case7", size=256)
    opened = []
    real_open = openslide.OpenSlide.__init__
    monkeypatch.setattr(openslide.OpenSlide, "__init__",
                        lambda self, file: opened.append(file) or real_open(self, file))
    for _ in range(3):
        open_slide(case7 / "level0.dcm").close()
    checks = len(opened) - 3  # the three opens of the slide itself
    assert checks >= 1
    stat = (case7 / "label.dcm").stat()
    os.utime(case7 / "label.dcm", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # rewritten: checked again
    with open_slide(case7 / "level0.dcm"):
        assert len(opened) == 2 * checks + 4


def test_a_label_in_a_series_of_its_own_is_no_second_slide(tmp_path):
    """Scanners may export the label (or overview) as a series of its own: OpenSlide opens no series without a
    pyramid, so it is no second whole-slide series and the slide opens as one."""
    from pydicom.uid import generate_uid

    case7 = dicom_slide(tmp_path / "case7", size=256)
    _dicom_instance(case7 / "label_series.dcm", np.full((96, 96, 3), 30, np.uint8),
                    ["ORIGINAL", "PRIMARY", "LABEL", "NONE"], generate_uid(), 0.1, tile=96)
    (found,) = find_slides([case7])
    with open_slide(found) as reader:
        assert reader.dimensions == (256, 256)


def test_a_dicom_slide_s_source_is_its_folder_and_changes_with_any_instance(tmp_path):
    folder = dicom_slide(tmp_path / "case7")
    before = slide_source(folder / "label.dcm")
    assert before == slide_source(folder / "level0.dcm") and before["path"] == str(folder.resolve())
    assert before["size"] == sum(p.stat().st_size for p in folder.glob("*.dcm"))
    (folder / "level1.dcm").write_bytes((folder / "level1.dcm").read_bytes() + b"\0\0")  # one level rescanned
    assert slide_source(folder / "label.dcm") != before


def test_a_folder_of_many_dcm_files_is_listed_in_moments(tmp_path):
    """Each instance of a folder examined every instance again (each file's size and format): a thousand .dcm files
    (a CT series exported beside the slides) took 48 s, n^2 file reads, before a single slide was read."""
    import time

    series = tmp_path / "archive" / "ct"
    series.mkdir(parents=True)
    for i in range(1000):
        (series / f"IM{i:05d}.dcm").write_bytes(b"DICM" * 40)
    case7 = dicom_slide(tmp_path / "archive" / "case7", size=256)
    start = time.perf_counter()
    found = find_slides([tmp_path / "archive"], recursive=True)
    assert time.perf_counter() - start < 5.0
    assert [slide_id(p) for p in found] == ["case7", "ct"] and found[0] == case7 / "level0.dcm"


def test_dicom_instances_named_in_capitals_are_one_slide(tmp_path):
    """Scanners and Windows exports write LEVEL0.DCM: the same one slide, named by its folder."""
    case7 = dicom_slide(tmp_path / "case7")
    for path in list(case7.iterdir()):
        path.rename(path.with_name(path.name.upper()))
    assert [(p.name, slide_id(p)) for p in find_slides([case7])] == [("LEVEL0.DCM", "case7")]
    assert slide_source(case7 / "LABEL.DCM") == slide_source(case7 / "LEVEL0.DCM")


def test_a_dicom_slide_rescanned_at_the_same_size_or_copied_with_a_mac_twin(tmp_path):
    """An instance written again at the same size (uncompressed tiles) is a rescan: its slide's outputs are redone.
    A macOS ._ twin that a copy from a Mac adds is no instance: the slide is the same, and not redone."""
    import os

    folder = dicom_slide(tmp_path / "case7")
    before = slide_source(folder / "level0.dcm")
    (folder / "._level1.dcm").write_bytes(b"macOS twin")
    assert slide_source(folder / "level0.dcm") == before
    later = (folder / "level1.dcm").stat().st_mtime_ns + 10**9
    os.utime(folder / "level1.dcm", ns=(later, later))
    assert slide_source(folder / "level0.dcm") != before
