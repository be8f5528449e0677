"""The main window: studies, two linked views, lesion list, status bar."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
from cno_annotate_ui.help import HelpDialog
from cno_annotate_ui.lesion_panel import LesionPanel
from cno_annotate_ui.loader import VolumeLoader
from cno_annotate_ui.slice_view import SliceView
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QComboBox,
    QDockWidget,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QProgressBar,
    QPushButton,
    QSplitter,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from cno_annotate import reading_study as rs
from cno_annotate.annotation.reads import ReadSession
from cno_annotate.display.catalog import default_pair, series_choices
from cno_annotate.display.overlay import Marker
from cno_annotate.display.planes import PLANES
from cno_annotate.display.regions import REGION_FRACTIONS
from cno_annotate.display.session import VIEW_NAMES, ViewerSession
from cno_annotate.errors import CnoError
from cno_annotate.store import Store


def _toggle(text: str, parent, shortcut: QKeySequence) -> QAction:
    """A checkable action, on at start."""
    action = QAction(text, parent)
    action.setCheckable(True)
    action.setChecked(True)
    action.setShortcut(shortcut)
    return action


class ViewPanel(QWidget):
    """A slice view with its series, plane and window-preset selectors."""

    def __init__(self, session: ViewerSession, name: str, parent=None):
        super().__init__(parent)
        self.session, self.name = session, name
        self.series = QComboBox(self)
        self.series.setToolTip("Series shown in this view")
        self.series.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.plane = QComboBox(self)
        self.plane.addItems([p.capitalize() for p in PLANES])
        self.plane.setToolTip("Plane (A / C / S)")
        self.preset = QComboBox(self)
        self.preset.setToolTip("Window / level preset")
        self.view = SliceView(session, name, self)
        header = QHBoxLayout()
        header.setContentsMargins(0, 0, 0, 0)
        header.addWidget(self.series, 3)
        header.addWidget(self.plane, 1)
        header.addWidget(self.preset, 2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(2)
        layout.addLayout(header)
        layout.addWidget(self.view, 1)
        self.plane.currentIndexChanged.connect(lambda i: session.set_plane(name, PLANES[i]))
        self.preset.textActivated.connect(lambda text: session.apply_preset(name, text))
        session.changed.connect(self._sync)

    def _sync(self, name, what) -> None:
        """Show the session's plane and presets in the selectors."""
        state = self.session.views[self.name]
        if what in ("plane", "volume") and (name is None or name == self.name):
            self.plane.blockSignals(True)
            self.plane.setCurrentIndex(PLANES.index(state.plane))
            self.plane.blockSignals(False)
        if what == "volume" and name == self.name:
            self.preset.clear()
            self.preset.addItems(list(state.presets))


def default_reader() -> str:
    """The reader id when none is given: the login name."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "reader"


class MainWindow(QMainWindow):
    """Studies on the left, STIR and T1 side by side, lesions on the right."""

    all_loaded = Signal()

    def __init__(self, store_root: Path, reader: str | None = None, reading_study: str | None = None, parent=None):
        super().__init__(parent)
        self.setWindowTitle("cno-annotate")
        self.store_root = Path(store_root)
        self.store = Store.open(self.store_root)
        self.reader = reader or default_reader()
        self.reading_study = reading_study  # reader mode: blinded, reading codes only
        self.role = rs.role_of(self.store, reading_study, self.reader) if reading_study else "reader"
        self.current_code: str | None = None
        self.read_session: ReadSession | None = None
        self.extra_markers: list[Marker] = []
        self.session = ViewerSession()
        self.loader = VolumeLoader(self.store_root, self)
        self._pending: set[str] = set()
        self._labels: dict[str, str] = {}
        self.panels = {name: ViewPanel(self.session, name) for name in VIEW_NAMES}
        splitter = QSplitter(Qt.Horizontal, self)
        for panel in self.panels.values():
            splitter.addWidget(panel)
        self.setCentralWidget(splitter)
        self._build_studies_dock()
        self._build_lesions_dock()
        self._build_toolbar()
        self._build_status_bar()
        for name, panel in self.panels.items():
            panel.series.activated.connect(lambda index, n=name: self._series_chosen(n, index))
            panel.view.hovered.connect(self._show_position)
            panel.view.lesion_drawn.connect(self._lesion_drawn)
        self.loader.progress.connect(self._on_progress)
        self.loader.loaded.connect(self._on_loaded)
        self.loader.failed.connect(self._on_failed)
        self.session.changed.connect(self._on_session_changed)
        self.resize(1400, 900)
        self.refresh_studies()

    # -- building ----------------------------------------------------------------
    def _build_studies_dock(self) -> None:
        panel = QWidget(self)
        layout = QVBoxLayout(panel)
        layout.setContentsMargins(2, 2, 2, 2)
        self.search = QLineEdit(panel)
        self.search.setPlaceholderText("Search studies")
        self.search.setClearButtonEnabled(True)
        self.study_list = QListWidget(panel)
        layout.addWidget(self.search)
        layout.addWidget(self.study_list)
        dock = QDockWidget("Worklist" if self.reading_study else "Studies", self)
        dock.setObjectName("studies")
        if self.reading_study:
            self.search.setPlaceholderText("Search reading codes")
            self.next_button = QPushButton("Next case", panel)
            self.next_button.setToolTip("The next case of your worklist that you have not submitted (Ctrl+N)")
            self.next_button.clicked.connect(self.open_next_case)
            layout.addWidget(self.next_button)
            self.case_info = QLabel("", panel)
            self.case_info.setWordWrap(True)
            layout.addWidget(self.case_info)
            next_action = QAction("Next case", self)
            next_action.setShortcut(QKeySequence("Ctrl+N"))
            next_action.triggered.connect(self.open_next_case)
            self.addAction(next_action)
        dock.setWidget(panel)
        dock.setFeatures(QDockWidget.DockWidgetMovable | QDockWidget.DockWidgetFloatable)
        self.addDockWidget(Qt.LeftDockWidgetArea, dock)
        self.search.textChanged.connect(self._filter_studies)
        self.study_list.currentItemChanged.connect(self._study_chosen)
        find = QAction("Search studies", self)
        find.setShortcut(QKeySequence("Ctrl+F"))
        find.triggered.connect(lambda: self.search.setFocus())
        self.addAction(find)

    def _build_lesions_dock(self) -> None:
        self.lesion_panel = LesionPanel(self)
        self.lesion_panel.lesion_selected.connect(self._lesion_selected)
        self.lesion_panel.message.connect(lambda text: self.statusBar().showMessage(text, 10000))
        self.lesion_panel.session_replaced.connect(self._use_read_session)
        dock = QDockWidget("Lesions", self)
        dock.setObjectName("lesions")
        dock.setWidget(self.lesion_panel)
        dock.setFeatures(QDockWidget.DockWidgetMovable | QDockWidget.DockWidgetFloatable)
        self.addDockWidget(Qt.RightDockWidgetArea, dock)

    def _build_toolbar(self) -> None:
        bar = QToolBar("View", self)
        bar.setObjectName("view")
        bar.setMovable(False)
        self.addToolBar(bar)
        self.link_action = _toggle("Link position", self, QKeySequence("Ctrl+L"))
        self.link_action.setToolTip("Views follow each other in patient coordinates (Ctrl+L)")
        self.link_action.toggled.connect(lambda on: setattr(self.session, "link_position", on))
        self.zoom_link_action = _toggle("Link zoom", self, QKeySequence("Ctrl+Shift+L"))
        self.zoom_link_action.setToolTip("Zoom and pan together (Ctrl+Shift+L)")
        self.zoom_link_action.toggled.connect(lambda on: setattr(self.session, "link_zoom", on))
        bar.addAction(self.link_action)
        bar.addAction(self.zoom_link_action)
        bar.addSeparator()
        self.mark_action = QAction("Mark lesion", self)
        self.mark_action.setCheckable(True)
        self.mark_action.setShortcut(QKeySequence(Qt.Key_M))
        self.mark_action.setToolTip("Click to place a lesion, drag to draw its extent (M)")
        self.mark_action.toggled.connect(self._set_mark_mode)
        self.undo_action = QAction("Undo", self)
        self.undo_action.setShortcuts([QKeySequence("Ctrl+Z")])
        self.undo_action.triggered.connect(lambda: self._edit_read(lambda r: r.undo()))
        self.redo_action = QAction("Redo", self)
        self.redo_action.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        self.redo_action.triggered.connect(lambda: self._edit_read(lambda r: r.redo()))
        for action in (self.mark_action, self.undo_action, self.redo_action):
            bar.addAction(action)
        bar.addSeparator()
        self.region = QComboBox(self)
        self.region.addItem("Go to region…")
        self.region.addItems(list(REGION_FRACTIONS))
        self.region.setToolTip("Jump to a body region (head to feet)")
        self.region.activated.connect(self._jump_to_region)
        bar.addWidget(self.region)
        bar.addSeparator()
        help_action = QAction("Help", self)
        help_action.setShortcut(QKeySequence(Qt.Key_F1))
        help_action.setToolTip("Mouse and keyboard (F1)")
        help_action.triggered.connect(self.show_help)
        bar.addAction(help_action)
        quit_action = QAction("Quit", self)
        quit_action.setShortcut(QKeySequence("Ctrl+Q"))
        quit_action.triggered.connect(self.close)
        self.addAction(quit_action)

    def _build_status_bar(self) -> None:
        self.position_label = QLabel("", self)
        self.progress = QProgressBar(self)
        self.progress.setMaximumWidth(180)
        self.progress.setRange(0, 100)
        self.progress.hide()
        self.statusBar().addWidget(self.position_label, 1)
        self.statusBar().addPermanentWidget(self.progress)

    # -- studies -------------------------------------------------------------------
    def refresh_studies(self) -> None:
        """Fill the study list from the store (reader mode: the worklist of reading codes)."""
        if self.reading_study:
            self._refresh_worklist()
            return
        self.study_list.blockSignals(True)
        self.study_list.clear()
        for study in self.store.studies():
            text = "  ".join(x for x in (study["study_date"], study["patient_id"], study["description"]) if x)
            tip = f"{study['volumes']} volumes"
            if study["missing_files"]:
                text += f"  ({study['missing_files']} files missing)"
                tip += (f"; {study['missing_files']} files not found where they were imported from: import the "
                        "moved folder again or run 'cno-annotate relocate OLD NEW'")
            item = QListWidgetItem(text or study["study_uid"])
            item.setData(Qt.UserRole, study["study_uid"])
            item.setToolTip(tip)
            self.study_list.addItem(item)
        self.study_list.blockSignals(False)
        if self.study_list.count() == 0:
            self.statusBar().showMessage("No studies in the store: import some with 'cno-annotate import PATH'")

    def _study_chosen(self, item: QListWidgetItem | None, _previous=None) -> None:
        if item is None:
            return
        if self.reading_study:
            self.open_case(item.data(Qt.UserRole))
        else:
            self.open_study(item.data(Qt.UserRole))

    def open_case(self, code: str) -> None:
        """Reader mode: open a case by its reading code."""
        self.current_code = code
        study_uid = rs.study_uid_of(self.store, self.reading_study, code)
        self.setWindowTitle(f"cno-annotate — {self.reading_study} — {self.role} {self.reader} — {code}")
        self.open_study(study_uid)

    def _refresh_worklist(self) -> None:
        self.study_list.blockSignals(True)
        current = self.current_code
        self.study_list.clear()
        for entry in rs.worklist(self.store, self.reading_study, self.reader):
            extra = []
            if "sex" in entry:
                extra.append(f"{entry['sex'] or '?'} {entry['age_years'] if entry['age_years'] is not None else '?'} y")
            if "timepoint" in entry:
                extra.append(f"{entry['patient_code']} tp {entry['timepoint']}/{entry['timepoints']}")
            text = f"{entry['position']:3}. {entry['reading_code']}  {entry['status']}"
            item = QListWidgetItem(text + (f"  ({', '.join(extra)})" if extra else ""))
            item.setData(Qt.UserRole, entry["reading_code"])
            item.setData(Qt.UserRole + 1, entry["status"])
            self.study_list.addItem(item)
            if entry["reading_code"] == current:
                self.study_list.setCurrentItem(item)
        self.study_list.blockSignals(False)

    def open_next_case(self) -> None:
        """Open the next case of the worklist not yet submitted."""
        rows = [self.study_list.item(n) for n in range(self.study_list.count())]
        codes = [r.data(Qt.UserRole) for r in rows]
        start = codes.index(self.current_code) + 1 if self.current_code in codes else 0
        for item in rows[start:] + rows[:start]:
            if item.data(Qt.UserRole + 1) != "submitted" and item.data(Qt.UserRole) != self.current_code:
                self.study_list.setCurrentItem(item)
                return
        self.statusBar().showMessage("Every case of your worklist is submitted", 10000)

    def _filter_studies(self, text: str) -> None:
        words = text.lower().split()
        for row in range(self.study_list.count()):
            item = self.study_list.item(row)
            item.setHidden(not all(w in item.text().lower() for w in words))

    def select_study(self, study_uid: str) -> None:
        """Select a study in the list (and open it)."""
        for row in range(self.study_list.count()):
            if self.study_list.item(row).data(Qt.UserRole) == study_uid:
                self.study_list.setCurrentRow(row)
                return
        self.open_study(study_uid)

    def open_study(self, study_uid: str) -> None:
        """Fill the series selectors and load STIR left, T1 right."""
        volumes = self.store.volumes(study_uid)
        choices = series_choices(volumes, blinded=self.reading_study is not None)
        self._labels = dict(choices)
        for panel in self.panels.values():
            panel.series.clear()
            for volume_id, label in choices:
                panel.series.addItem(label, volume_id)
        self.open_read(study_uid)
        for name, volume_id in zip(VIEW_NAMES, default_pair(volumes)):
            if volume_id is None:
                self.session.set_error(name, "this study has no series to show here")
                continue
            self.show_volume(name, volume_id)

    def open_read(self, study_uid: str) -> None:
        """Open (or start) this reader's read of the study."""
        if self.read_session is not None:
            self.read_session.changed.disconnect(self._read_changed)
        try:
            if self.reading_study:
                study = rs.get(self.store, self.reading_study)
                self.read_session = ReadSession.open_or_create(
                    self.store, study_uid, self.reader, study.scheme_id, reading_study=self.reading_study,
                    role=self.role, scheme_version=study.scheme_version)
                self._show_case_info(study)
            else:
                self.read_session = ReadSession.open_or_create(self.store, study_uid, self.reader)
        except CnoError as exc:
            self.read_session = None
            self.statusBar().showMessage(f"Cannot open the read: {exc}", 15000)
        else:
            self.read_session.changed.connect(self._read_changed)
        self.lesion_panel.set_session(self.read_session)
        self._refresh_markers()
        self._update_undo_actions()

    def _use_read_session(self, session: ReadSession) -> None:
        """Switch to another read of the same study (a new version of a submitted read)."""
        if self.read_session is not None:
            self.read_session.changed.disconnect(self._read_changed)
        self.read_session = session
        session.changed.connect(self._read_changed)
        self.lesion_panel.set_session(session)
        self._refresh_markers()
        self._update_undo_actions()
        if self.reading_study:
            self._refresh_worklist()
        self.statusBar().showMessage(f"Version {session.read.version} is open for change", 10000)

    def _series_chosen(self, name: str, index: int) -> None:
        self.show_volume(name, self.panels[name].series.itemData(index))

    def show_volume(self, name: str, volume_id: str) -> None:
        """Load a volume into a view (in the background)."""
        panel = self.panels[name]
        panel.series.setCurrentIndex(max(0, panel.series.findData(volume_id)))
        self._pending.add(name)
        self.session.set_loading(name, self._labels.get(volume_id, volume_id))
        self.loader.load(name, volume_id)
        self._update_progress()

    # -- loading -------------------------------------------------------------------
    def _on_progress(self, name: str, fraction: float) -> None:
        self.session.set_loading(name, self.session.views[name].label, fraction)
        self._update_progress()

    def _on_loaded(self, name: str, volume) -> None:
        self.session.set_volume(name, volume, self.session.views[name].label)
        errors = volume.meta.get("load_errors") or []
        if errors:
            self.statusBar().showMessage(f"{len(errors)} slices could not be read; first: {errors[0]['path']}: "
                                         f"{errors[0]['reason']}", 15000)
        self._finish(name)

    def _on_failed(self, name: str, message: str) -> None:
        self.session.set_error(name, message)
        self.statusBar().showMessage(f"Cannot load {self.session.views[name].label}: {message}", 15000)
        self._finish(name)

    def _finish(self, name: str) -> None:
        self._pending.discard(name)
        self._update_progress()
        if not self._pending:
            self.all_loaded.emit()

    def _update_progress(self) -> None:
        loading = [v for v in self.session.views.values() if v.status == "loading"]
        self.progress.setVisible(bool(loading))
        if loading:
            self.progress.setValue(int(100 * min(v.progress for v in loading)))
            self.progress.setFormat(f"Loading {loading[0].label} %p%")

    # -- actions -----------------------------------------------------------------------
    def _show_case_info(self, study) -> None:
        """Age / sex if the study allows; for adjudicators, the readers' submitted reads."""
        details = rs.case_details(self.store, study, self.current_code)
        lines = [f"Case {html.escape(self.current_code)}"]
        if "sex" in details:
            lines.append(f"Sex {details['sex'] or '?'}, age {details['age_years'] if details['age_years'] is not None else '?'} y")
        if "timepoint" in details:
            lines.append(f"Patient {details['patient_code']}, timepoint {details['timepoint']} of {details['timepoints']}")
        self.extra_markers = []
        if self.role == "adjudicator":
            colours = ["#ff7ad9", "#7dff7a", "#ffb14d", "#b48cff"]
            for n, read in enumerate(rs.adjudication_view(self.store, self.reading_study, self.current_code, self.reader)):
                colour = colours[n % len(colours)]
                lines.append(f"<span style='color:{colour}'>{html.escape(read['reader'])}</span>: "
                             f"total {read['scores']['total']}, "
                             f"{len(read['lesions'])} lesions")
                for lesion in read["lesions"]:
                    site = lesion["site"]["label"] if lesion["site"] else "no site"
                    side = lesion["laterality"]["side"] if lesion["laterality"] else ""
                    markers_label = f"{read['reader']} {lesion['lesion_id']} {site} {side}".strip()
                    self.extra_markers.append(Marker(tuple(lesion["position"]["lps_mm"]), (5.0, 5.0, 5.0),
                                                     markers_label, colour, False, f"{read['reader']}/{lesion['lesion_id']}"))
        self.case_info.setText("<br>".join(lines))

    def set_markers(self, markers: list[Marker]) -> None:
        """Show extra markers (not lesions of the open read) in both views."""
        self.extra_markers = list(markers)
        self._refresh_markers()

    def _refresh_markers(self) -> None:
        markers = list(self.extra_markers)
        if self.read_session is not None:
            taxonomy = self.read_session.taxonomy
            for lesion in self.read_session.read.lesions:
                site = taxonomy.site(lesion.site_id).label if lesion.site_id else "no site"
                selected = lesion.lesion_id == self.lesion_panel.selected
                colour = "#ffd000" if selected else ("#ff5a5a" if lesion.site_id is None else "#3ec8ff")
                label = f"{lesion.lesion_id} {site}{' ' + lesion.side if lesion.side else ''}"
                markers.append(Marker(lesion.position, lesion.radii_mm, label, colour, selected, lesion.lesion_id))
        self.session.set_markers(markers)

    def _read_changed(self, label: str) -> None:
        self._refresh_markers()
        self._update_undo_actions()
        if self.reading_study and label == "submit":
            self._refresh_worklist()

    def _update_undo_actions(self) -> None:
        session = self.read_session
        self.undo_action.setEnabled(session is not None and session.can_undo)
        self.redo_action.setEnabled(session is not None and session.can_redo)

    def _edit_read(self, change) -> None:
        if self.read_session is None:
            return
        try:
            change(self.read_session)
        except CnoError as exc:
            self.statusBar().showMessage(str(exc), 10000)

    def _set_mark_mode(self, on: bool) -> None:
        for panel in self.panels.values():
            panel.view.mark_mode = on
            panel.view.setCursor(Qt.CrossCursor if on else Qt.ArrowCursor)
        self.statusBar().showMessage("Mark lesion: click a lesion, or drag from its centre to draw its extent"
                                     if on else "", 5000)

    def _lesion_drawn(self, name: str, centre, extent) -> None:
        """Place a lesion where the reader clicked or dragged, in one undo step."""
        view = self.session.views[name]
        if self.read_session is None or not view.ready:
            self.statusBar().showMessage("Open a study before marking lesions", 10000)
            return
        side = self.read_session.taxonomy.propose_side(float(centre[0]))
        voxel = view.volume.lps_to_index(centre)
        try:
            lesion_id = self.read_session.add_lesion(centre, view.volume.volume_id, voxel, side=side, extent=extent)
        except CnoError as exc:
            self.statusBar().showMessage(str(exc), 10000)
            return
        self.lesion_panel.select(lesion_id, focus_site=True)

    def _lesion_selected(self, lesion_id: str) -> None:
        if lesion_id and self.read_session is not None:
            lesion = self.read_session.read.lesion(lesion_id)
            self.session.set_point(VIEW_NAMES[0], np.array(lesion.position, float))
        self._refresh_markers()

    def _jump_to_region(self, index: int) -> None:
        if index <= 0:
            return
        region = self.region.itemText(index)
        ready = [name for name, v in self.session.views.items() if v.ready]
        if ready:
            self.session.jump_to_region(ready[0], region)
        self.region.setCurrentIndex(0)

    def show_help(self) -> None:
        """Show every mouse and keyboard action."""
        HelpDialog(self).exec()

    def _show_position(self, lps) -> None:
        point = lps if lps is not None else next(
            (v.point for v in self.session.views.values() if v.ready), None)
        if point is None:
            self.position_label.setText("")
            return
        parts = [f"LPS {point[0]:.1f}, {point[1]:.1f}, {point[2]:.1f} mm"]
        for view in self.session.views.values():
            if not view.ready:
                continue
            value = view.value_at(point)
            shown = "outside" if value is None else f"{value:.0f}"
            parts.append(f"{view.label}: {shown} ({view.plane} {view.slice_index + 1}/{view.mapping.slices})")
        self.position_label.setText("   |   ".join(parts))

    def _on_session_changed(self, name, what) -> None:
        if what in ("point", "volume", "plane"):
            self._show_position(None)

    def closeEvent(self, event) -> None:  # noqa: N802
        self.lesion_panel.flush()  # a comment still being typed is saved
        self.loader.wait(5000)
        self.store.close()
        super().closeEvent(event)
