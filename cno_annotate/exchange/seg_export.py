"""Lesion extents as DICOM Segmentations (BINARY), one per station series, one segment per lesion.

A SEG's source images must share one series, so lesions are grouped by the
station series that holds them (:mod:`.stations`); each segment carries the
lesion's tracking UID and identifier, its finding site (with laterality and
sub-site) and the category "morphologically abnormal structure". Lesions
without an extent have no segment.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np

from cno_annotate import __version__
from cno_annotate.annotation.model import Read
from cno_annotate.annotation.scheme import load_scheme
from cno_annotate.annotation.taxonomy import load_taxonomy
from cno_annotate.exchange import codes as cc
from cno_annotate.exchange.geometry import extent_mask
from cno_annotate.exchange.sr_export import SRContext
from cno_annotate.exchange.stations import Station, Stations

SEG_SERIES_NUMBER = 9902


def build_segs(read: Read, stations: Stations) -> tuple[list[hd.seg.Segmentation], list[str]]:
    """One SEG per station series holding lesions with an extent, and the ids of lesions left out."""
    ctx = SRContext(load_taxonomy(read.taxonomy), load_scheme(read.scheme_id, read.scheme_version),
                    cc.load_code_table(), stations)
    by_station: dict[str, tuple[Station, list]] = {}
    skipped = []
    for lesion in read.lesions:
        if lesion.extent is None:
            skipped.append(lesion.lesion_id)
            continue
        station = stations.holding(lesion.series_uid, lesion.position)
        by_station.setdefault(station.volume_id, (station, []))[1].append(lesion)
    return [_seg(read, station, lesions, ctx) for station, lesions in by_station.values()], skipped


def _seg(read: Read, station: Station, lesions: list, ctx: SRContext) -> hd.seg.Segmentation:
    from cno_annotate.exchange.sr_export import finding_site

    shape = station.shape
    masks = []
    descriptions = []
    for number, lesion in enumerate(lesions, start=1):
        grid = extent_mask(lesion, station.affine, shape)
        masks.append(grid[np.asarray(station.stack.slice_index)])
        site = finding_site(lesion.site_id, lesion.side, lesion.subsite, ctx) if lesion.site_id else None
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=f"lesion {lesion.lesion_id}",
            segmented_property_category=cc.FINDING_CATEGORY,
            segmented_property_type=cc.FINDING_TYPE,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            tracking_uid=lesion.tracking_uid,
            tracking_id=lesion.lesion_id,
            anatomic_regions=[site.value] if site is not None else None,
        ))
    pixels = np.stack(masks, axis=-1).astype(np.uint8)
    return hd.seg.Segmentation(
        source_images=station.headers,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="cno-annotate",
        manufacturer_model_name="cno-annotate",
        software_versions=__version__,
        device_serial_number="0",
        series_description=f"CNO lesions ({read.reader})",
        omit_empty_frames=False,
    )


