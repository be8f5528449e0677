"""The viewer's state, without any widget: views, linked cursor, markers.

The Qt front end draws what a :class:`ViewerSession` holds and calls its
methods for every gesture; it keeps no state of its own. Views follow each
other in **patient coordinates**: each view keeps an LPS point, shows the
slice that contains it, and, while linked, every move of one view's point
moves the others', whatever their grids, spacing or stations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from cno_annotate.annotation.model import Roi
from cno_annotate.display.facts import VolumeFacts, volume_facts
from cno_annotate.display.measure import (
    RoiStats,
    Ruler,
    ScreenRoi,
    outline_holds,
    roi_outline,
    roi_slice,
    roi_stats,
)
from cno_annotate.display.missing import MissingSlices
from cno_annotate.display.overlay import Marker, ScreenMarker, markers_on_slice
from cno_annotate.display.planes import (
    PLANES,
    PlaneMapping,
    extract,
    index_to_screen,
    plane_mapping,
    screen_to_index,
)
from cno_annotate.display.regions import region_z
from cno_annotate.display.windowing import AUTO, Window
from cno_annotate.events import Event
from cno_annotate.io.volume import Volume

VIEW_NAMES = ("left", "right", "lower-left", "lower-right")
#: The views each layout shows ("1x1" shows the active view only).
LAYOUTS = {"1x1": 1, "1x2": 2, "2x2": 4}
#: What the lower row shows in the 2x2 layout: (view above it, plane).
LOWER_VIEWS = {"lower-left": ("left", "sagittal"), "lower-right": ("right", "sagittal")}
MIN_ZOOM, MAX_ZOOM = 0.05, 40.0  # screen pixels per mm


class StudyFrame(StrEnum):
    """The study a view shows in follow-up reading: the one being read, or the earlier one beside it."""

    CURRENT = "current"
    PRIOR = "prior"


CURRENT, PRIOR = StudyFrame.CURRENT, StudyFrame.PRIOR
#: The region named while no registration links prior and current (same patient coordinates).
UNREGISTERED = "unregistered"


class ViewChange(StrEnum):
    """What changed in a view, as the session's ``changed`` event says it."""

    POINT = "point"  #: the linked LPS point (the slice shown, the crosshair)
    VOLUME = "volume"  #: the volume shown
    PLANE = "plane"  #: axial, coronal or sagittal
    WINDOW = "window"  #: window/level, preset, inversion
    ZOOM = "zoom"  #: zoom or pan
    STATUS = "status"  #: loading, progress, errors
    MARKERS = "markers"  #: lesion markers, rulers, overlays
    TRANSFORM = "transform"  #: the registration linking prior and current views (set or nudged)


@dataclass
class ViewState:
    """One image view: its volume, plane, window, zoom and point."""

    name: str
    volume: Volume | None = None
    label: str = ""
    plane: str = "coronal"
    mapping: PlaneMapping | None = None
    window: Window | None = None
    presets: dict[str, Window] = field(default_factory=dict)
    point: np.ndarray | None = None  # LPS mm
    zoom: float | None = None  # screen px per mm; None: fit the window
    centre: np.ndarray | None = None  # LPS point at the view's centre; None: image centre
    status: str = "empty"  # empty, loading, ready, error
    message: str = ""
    progress: float = 0.0
    viewport: tuple[float, float] = (0.0, 0.0)  # the widget's width and height in (logical) pixels
    missing: MissingSlices | None = None  # slices without any signal (not read, or gaps)
    inverted: bool = False  # grey scale inverted (bright shown dark)
    frame: StudyFrame = StudyFrame.CURRENT  # CURRENT or PRIOR: which study's patient coordinates ``point`` is in

    @property
    def preset_name(self) -> str | None:
        """The preset the window is at; None for a window of the reader's own (a right drag)."""
        return next((name for name, preset in self.presets.items() if preset == self.window), None)

    @property
    def previewing(self) -> bool:
        """Whether the view shows a composed volume whose composition has not ended yet."""
        return self.volume is not None and self.volume.load.preview

    @property
    def ready(self) -> bool:
        """Whether an image can be shown."""
        return self.status == "ready" and self.volume is not None and self.mapping is not None

    def loaded(self) -> tuple[Volume, PlaneMapping, np.ndarray]:
        """The volume, plane mapping and LPS point of a view that has an image.

        Raises
        ------
        RuntimeError
            If the view has no image yet.
        """
        if self.volume is None or self.mapping is None or self.point is None:
            raise RuntimeError(f"the {self.name} view has no image")
        return self.volume, self.mapping, self.point

    @property
    def slice_index(self) -> int:
        """The displayed slice: the one that contains the view's point."""
        if not self.ready:
            return 0
        volume, mapping, point = self.loaded()
        ijk = volume.lps_to_index(point)
        by_axis = {2 - n: ijk[n] for n in range(3)}
        return int(np.clip(np.round(by_axis[mapping.slice_axis]), 0, mapping.slices - 1))

    def pixels_per_mm(self) -> float:
        """Current zoom: screen pixels per millimetre (fit to the viewport when the zoom is unset)."""
        if self.zoom is not None:
            return self.zoom
        m = self.loaded()[1]
        width, height = self.viewport
        return 0.98 * min(width / (m.cols * m.col_mm), height / (m.rows * m.row_mm))

    def centre_pixel(self) -> tuple[float, float]:
        """Image (row, column) shown at the viewport's centre."""
        m = self.loaded()[1]
        if self.centre is None:
            return (m.rows - 1) / 2, (m.cols - 1) / 2
        return self.lps_to_screen(self.centre)

    def image_to_viewport(self, row: float, col: float) -> tuple[float, float]:
        """Viewport (x, y) of the centre of image pixel (row, column)."""
        m = self.loaded()[1]
        scale = self.pixels_per_mm()
        c_row, c_col = self.centre_pixel()
        return (self.viewport[0] / 2 + (col - c_col) * m.col_mm * scale,
                self.viewport[1] / 2 + (row - c_row) * m.row_mm * scale)

    def viewport_to_image(self, x: float, y: float) -> tuple[float, float]:
        """Image (row, column) under a viewport position."""
        m = self.loaded()[1]
        scale = self.pixels_per_mm()
        c_row, c_col = self.centre_pixel()
        return (c_row + (y - self.viewport[1] / 2) / (m.row_mm * scale),
                c_col + (x - self.viewport[0] / 2) / (m.col_mm * scale))

    def shows(self, lps, margin: float = 0.1) -> bool:
        """Whether an LPS point projects inside the viewport, ``margin`` (a fraction) away from its edges."""
        x, y = self.image_to_viewport(*self.lps_to_screen(np.asarray(lps, float)))
        width, height = self.viewport
        return margin * width <= x <= (1 - margin) * width and margin * height <= y <= (1 - margin) * height

    def image(self) -> np.ndarray:
        """The displayed 2-D slice (float, a view into the volume)."""
        volume, mapping, _ = self.loaded()
        return extract(volume.array, mapping, self.slice_index)

    def value_at(self, lps: np.ndarray) -> float | None:
        """The voxel value nearest to an LPS point, or None outside the volume."""
        if not self.ready:
            return None
        volume, _, _ = self.loaded()
        ijk = np.round(volume.lps_to_index(lps)).astype(int)
        k, j, i = ijk[2], ijk[1], ijk[0]
        shape = volume.shape
        if not (0 <= k < shape[0] and 0 <= j < shape[1] and 0 <= i < shape[2]):
            return None
        return float(volume.array[k, j, i])

    def screen_to_lps(self, row: float, col: float) -> np.ndarray:
        """LPS of a (row, column) position on the displayed slice."""
        volume, mapping, _ = self.loaded()
        return volume.index_to_lps(screen_to_index(mapping, self.slice_index, row, col))

    def lps_to_screen(self, lps: np.ndarray) -> tuple[float, float]:
        """(row, column) of an LPS point projected onto the displayed plane."""
        volume, mapping, _ = self.loaded()
        _, row, col = index_to_screen(mapping, volume.lps_to_index(lps))
        return row, col


class ViewerSession:
    """Two linked views and the lesion markers drawn over them.

    Events
    ------
    changed(view_name, what)
        After any change; ``what`` is a :class:`ViewChange`; ``view_name`` is
        None for changes to every view.
    """

    def __init__(self) -> None:
        self.views = {name: ViewState(name) for name in VIEW_NAMES}
        self.link_position = True
        self.link_zoom = True
        self.markers: list[Marker] = []
        self.overlays = True  # markers, crosshair and text over the images
        self.rulers: list[Ruler] = []
        self.rois: list[Roi] = []  # the open read's regions of interest
        self.roi_titles: dict[str, str] = {}  # ROI id -> what is written above its statistics
        self.selected_roi: str | None = None
        self._roi_stats: dict[tuple, RoiStats | None] = {}
        self.prior_markers: list[Marker] = []  # drawn over views of the prior study
        self.transform = None  # prior -> current registration (map_point, inverse, nudged); None: unregistered
        self._inverse = None
        self.region = UNREGISTERED  # the region whose transform linked the views last
        self.changed = Event()

    # -- volumes ---------------------------------------------------------------
    def set_loading(self, name: str, label: str, progress: float = 0.0) -> None:
        """Mark a view as loading (the UI shows progress)."""
        view = self.views[name]
        view.status, view.label, view.progress, view.message = "loading", label, progress, ""
        self.changed.emit(name, ViewChange.STATUS)

    def set_error(self, name: str, message: str) -> None:
        """Mark a view as failed, with the message to show in it."""
        view = self.views[name]
        view.status, view.message, view.volume, view.mapping = "error", message, None, None
        self.changed.emit(name, ViewChange.STATUS)

    def set_volume(self, name: str, volume: Volume, label: str = "", facts: VolumeFacts | None = None) -> None:
        """Show a loaded volume in a view, keeping the linked point.

        A volume with ``load.preview`` is a composed volume being built (its first
        station): it is shown at once, without missing-slice marks. The finished volume
        that follows keeps the point, zoom and centre the reader may have changed
        meanwhile; a preset chosen meanwhile stays that preset (the finished volume's values of
        it) and a window of the reader's own (a right drag) stays as it is.

        ``facts`` are the volume's presets and missing slices when the loader has them
        already (:mod:`cno_annotate.display.facts`); without them the volume is scanned here.
        """
        view = self.views[name]
        refining = view.volume is not None and view.previewing and view.volume.volume_id == volume.volume_id
        chosen = view.preset_name if refining else AUTO[0]  # None: the reader's own window
        facts = facts if facts is not None else volume_facts(volume)
        view.volume, view.label = volume, label or volume.volume_id
        view.presets = dict(facts.presets)
        if chosen is not None or view.window is None:
            view.window = view.presets.get(chosen or AUTO[0], view.presets[AUTO[0]])
        view.status, view.message = "ready", ""
        view.plane = _plane_showing(volume, view.plane)
        view.mapping = plane_mapping(volume.affine, volume.shape, view.plane)
        view.missing = None if volume.load.preview else facts.missing
        others = [v for v in self.views.values() if v is not view and v.point is not None and v.ready]
        if view.point is None:
            if others and self.link_position and others[0].point is not None:
                view.point = self._in_frame(others[0].point, others[0].frame, view.frame)
            else:
                view.point = _centre(volume)
        if not refining:
            view.zoom, view.centre = None, None
        self.changed.emit(name, ViewChange.VOLUME)

    # -- navigation ------------------------------------------------------------
    def set_point(self, name: str, lps) -> None:
        """Move a view's point (and, while linked, every view's point).

        ``lps`` is in the patient coordinates of the view's study; views of the
        other study (follow-up reading) get the corresponding point through the
        registration (:meth:`set_transform`), and :attr:`region` names the
        region whose transform was used.
        """
        lps = np.asarray(lps, dtype=float)
        source = self.views[name].frame
        targets = self.views.values() if self.link_position else [self.views[name]]
        for view in targets:
            view.point = self._in_frame(lps, source, view.frame)
        self.changed.emit(None if self.link_position else name, ViewChange.POINT)

    # -- follow-up: prior and current -------------------------------------------------------
    def set_frame(self, name: str, frame: StudyFrame | str) -> None:
        """Say which study a view shows: :data:`CURRENT` or :data:`PRIOR`."""
        self.views[name].frame = StudyFrame(frame)

    def set_transform(self, transform) -> None:
        """Link prior and current views through a registration (prior -> current); None: same coordinates.

        The prior views move to the point corresponding to the current views' point.
        """
        self.transform = transform
        self._inverse = None if transform is None else transform.inverse()
        self.changed.emit(None, ViewChange.TRANSFORM)
        self._realign()

    def nudge(self, delta_mm) -> None:
        """Correct the transform of the region in use by a translation (mm, current study's axes).

        Raises
        ------
        ValueError
            Without a registration (nothing to correct).
        """
        if self.transform is None or self.region == UNREGISTERED:
            raise ValueError("no registration to correct yet")
        self.set_transform(self.transform.nudged(self.region, np.asarray(delta_mm, float)))

    def _realign(self) -> None:
        current = [v.point for v in self.views.values() if v.frame == CURRENT and v.point is not None]
        prior = [v for v in self.views.values() if v.frame == PRIOR]
        if current and prior and self.link_position:
            for view in prior:
                view.point = self._in_frame(current[0], CURRENT, PRIOR)
            self.changed.emit(None, ViewChange.POINT)

    def _in_frame(self, lps: np.ndarray, source: StudyFrame, target: StudyFrame) -> np.ndarray:
        """A point of one study's coordinates in the other's (a copy when both are the same)."""
        if source == target:
            return np.array(lps, dtype=float)
        mapping = self.transform if source == PRIOR else self._inverse
        if mapping is None:
            self.region = UNREGISTERED
            return np.array(lps, dtype=float)
        mapped = mapping.map_point(np.asarray(lps, float))
        self.region = str(mapped.region)
        return np.asarray(mapped.point, dtype=float).copy()

    def set_prior_markers(self, markers: list[Marker]) -> None:
        """Replace the markers drawn over views of the prior study (the prior read's lesions)."""
        self.prior_markers = list(markers)
        self.changed.emit(None, ViewChange.MARKERS)

    def reveal(self, lps) -> None:
        """Bring an LPS point into every zoomed view that does not show it (the zoom is kept).

        A view at fit shows its whole slice; a zoomed view whose viewport does
        not hold the point is re-centred on it (linked zoom: every view).
        """
        for name, view in self.views.items():
            if view.ready and view.zoom is not None and not view.shows(lps):
                self.set_zoom(name, view.zoom, lps)
                if self.link_zoom:
                    return

    def set_viewport(self, name: str, width: float, height: float) -> None:
        """Record a view's size on screen (the fit zoom and :meth:`reveal` depend on it)."""
        self.views[name].viewport = (float(width), float(height))

    def scroll(self, name: str, steps: int) -> None:
        """Move a view ``steps`` slices along its normal (clamped to the volume)."""
        view = self.views[name]
        if not view.ready:
            return
        _, mapping, _ = view.loaded()
        target = int(np.clip(view.slice_index + steps, 0, mapping.slices - 1))
        self.go_to_slice(name, target)

    def cine_step(self, name: str) -> int:
        """Cine: show a view's next slice, from the last back to the first; returns the slice shown."""
        view = self.views[name]
        if not view.ready:
            return 0
        _, mapping, _ = view.loaded()
        target = (view.slice_index + 1) % mapping.slices
        self.go_to_slice(name, target)
        return target

    def go_to_slice(self, name: str, index: int) -> None:
        """Show slice ``index`` of a view, keeping the in-plane position."""
        view = self.views[name]
        if not view.ready:
            return
        volume, mapping, point = view.loaded()
        ijk = volume.lps_to_index(point)
        ijk[2 - mapping.slice_axis] = int(np.clip(index, 0, mapping.slices - 1))
        self.set_point(name, volume.index_to_lps(ijk))

    def set_plane(self, name: str, plane: str) -> None:
        """Switch a view to axial, coronal or sagittal; each view has its own plane (positions stay linked)."""
        if plane not in PLANES:
            raise ValueError(f"unknown plane {plane!r}")
        view = self.views[name]
        view.plane = plane
        if view.volume is not None:
            view.mapping = plane_mapping(view.volume.affine, view.volume.shape, plane)
        view.zoom, view.centre = None, None
        self.changed.emit(name, ViewChange.PLANE)

    def clear(self, name: str, message: str = "") -> None:
        """Empty a view (no series); ``message`` says what the reader can show there."""
        view = self.views[name]
        view.status, view.volume, view.mapping, view.message, view.label = "empty", None, None, message, ""
        self.changed.emit(name, ViewChange.STATUS)

    def jump_to_region(self, name: str, region: str) -> None:
        """Move the point to a body region (head-feet only)."""
        view = self.views[name]
        if not view.ready:
            return
        volume, _, point = view.loaded()
        point = point.copy()
        point[2] = region_z(volume)[region]
        self.set_point(name, point)
        self.reveal(point)

    # -- display ---------------------------------------------------------------
    def set_window(self, name: str, window: Window) -> None:
        """Set a view's window / level."""
        self.views[name].window = window
        self.changed.emit(name, ViewChange.WINDOW)

    def set_inverted(self, name: str, inverted: bool) -> None:
        """Show a view's grey scale inverted (or not)."""
        self.views[name].inverted = bool(inverted)
        self.changed.emit(name, ViewChange.WINDOW)

    def set_overlays(self, shown: bool) -> None:
        """Show or hide every overlay drawn over the images (markers, crosshair, text)."""
        self.overlays = bool(shown)
        self.changed.emit(None, ViewChange.MARKERS)

    def apply_preset_number(self, name: str, number: int) -> None:
        """Apply the view's ``number``-th window preset (1 = automatic); a number without preset is ignored."""
        names = list(self.views[name].presets)
        if 1 <= number <= len(names):
            self.apply_preset(name, names[number - 1])

    def apply_preset(self, name: str, preset: str) -> None:
        """Apply one of the view's named window presets."""
        self.set_window(name, self.views[name].presets[preset])

    def set_zoom(self, name: str, zoom: float | None, centre=None) -> None:
        """Set screen pixels per mm (None: fit) and the LPS point at the view centre."""
        zoom = None if zoom is None else float(np.clip(zoom, MIN_ZOOM, MAX_ZOOM))
        centre = None if centre is None else np.asarray(centre, dtype=float)
        targets = self.views.values() if self.link_zoom else [self.views[name]]
        for view in targets:
            view.zoom, view.centre = zoom, centre
        self.changed.emit(None if self.link_zoom else name, ViewChange.ZOOM)

    def add_ruler(self, name: str, start, end) -> Ruler:
        """Measure from ``start`` to ``end`` (LPS mm) on the view's displayed slice; one ruler per view."""
        view = self.views[name]
        ruler = Ruler(name, view.plane, view.slice_index, tuple(float(v) for v in start),  # type: ignore[arg-type]
                      tuple(float(v) for v in end), str(view.frame))  # type: ignore[arg-type]
        self.rulers = [r for r in self.rulers if r.view != name] + [ruler]
        self.changed.emit(name, ViewChange.MARKERS)
        return ruler

    def clear_rulers(self) -> None:
        """Remove every ruler."""
        self.rulers = []
        self.changed.emit(None, ViewChange.MARKERS)

    def rulers_on(self, name: str) -> list[Ruler]:
        """The rulers drawn on a view's displayed slice."""
        view = self.views[name]
        return [r for r in self.rulers if r.view == name and r.frame == view.frame and r.plane == view.plane
                and view.ready and r.slice_index == view.slice_index]

    def set_rois(self, rois: list[Roi], titles: dict[str, str] | None = None, selected: str | None = None) -> None:
        """Replace the regions of interest drawn over the views (and which one is selected)."""
        self.rois = list(rois)
        self.roi_titles = dict(titles or {})
        self.selected_roi = selected if selected in {r.roi_id for r in rois} else None
        self.changed.emit(None, ViewChange.MARKERS)

    def select_roi(self, roi_id: str | None) -> None:
        """Select an ROI (Delete removes it, U / L give it a role)."""
        self.selected_roi = roi_id
        self.changed.emit(None, ViewChange.MARKERS)

    def rois_on(self, name: str) -> list[ScreenRoi]:
        """The ROIs that lie on a view's displayed slice, with their statistics on the view's volume.

        None on a view of the prior study: the ROIs are the read's, in the current study's coordinates.
        """
        view = self.views[name]
        if not view.ready or view.frame == PRIOR:
            return []
        volume, mapping, _ = view.loaded()
        out = []
        for roi in self.rois:
            if roi.plane != view.plane or roi_slice(roi, volume, mapping) != view.slice_index:
                continue
            key = (roi, id(volume), volume.volume_id)
            if key not in self._roi_stats:
                if len(self._roi_stats) > 256:
                    self._roi_stats.clear()
                self._roi_stats[key] = roi_stats(roi, volume)
            out.append(ScreenRoi(roi, roi_outline(roi, volume, mapping), self._roi_stats[key],
                                 self.roi_titles.get(roi.roi_id, roi.roi_id), roi.roi_id == self.selected_roi))
        return out

    def roi_at(self, name: str, row: float, col: float) -> str | None:
        """The ROI of the displayed slice whose outline holds image (row, column), the smallest first (or None)."""
        hits = [(float(np.ptp(sr.outline[:, 0]) * np.ptp(sr.outline[:, 1])), sr.roi.roi_id)
                for sr in self.rois_on(name) if outline_holds(sr.outline, row, col)]
        return min(hits)[1] if hits else None

    def set_markers(self, markers: list[Marker]) -> None:
        """Replace the lesion markers drawn over every view."""
        self.markers = list(markers)
        self.changed.emit(None, ViewChange.MARKERS)

    def screen_markers(self, name: str) -> list[ScreenMarker]:
        """The markers cut by a view's displayed slice."""
        view = self.views[name]
        if not view.ready:
            return []
        volume, mapping, _ = view.loaded()
        markers = self.prior_markers if view.frame == PRIOR else self.markers
        return markers_on_slice(markers, mapping, volume.affine, view.slice_index)


def _plane_showing(volume: Volume, plane: str) -> str:
    """``plane``, or the plane of a volume's only slice where ``plane`` would cut it to a line a pixel wide.

    A single axial image shown in coronal is one row of pixels; in axial it is the image.
    """
    mapping = plane_mapping(volume.affine, volume.shape, plane)
    if mapping.slices == 1 or 1 not in (mapping.rows, mapping.cols):
        return plane
    return next((p for p in PLANES if plane_mapping(volume.affine, volume.shape, p).slices == 1), plane)


def _centre(volume: Volume) -> np.ndarray:
    k, j, i = volume.shape
    return volume.index_to_lps(np.array([(i - 1) / 2, (j - 1) / 2, (k - 1) / 2]))
