"""The main window: studies, two linked views, lesion list, status bar."""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import shiboken6
from cno_annotate_ui.checklist import SkeletonChecklist
from cno_annotate_ui.comparison import Comparison
from cno_annotate_ui.lesion_panel import GradeSelector, LesionPanel, SubsiteBox
from cno_annotate_ui.loader import VolumeLoader
from cno_annotate_ui.selectors import FittedCombo, StudyTag
from cno_annotate_ui.slice_view import SliceView
from cno_annotate_ui.status_bar import ElidedLabel, LoadingBar, StatusBar
from cno_annotate_ui.termination import Termination
from cno_annotate_ui.theme import apply_theme, default_theme
from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeyEvent, QKeySequence
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QDockWidget,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QSplitter,
    QStyle,
    QTextEdit,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from cno_annotate import reading_study as rs
from cno_annotate.annotation.documents import read_document
from cno_annotate.annotation.model import ReadingRole
from cno_annotate.annotation.reads import ReadChange, ReadChangeKind, ReadSession
from cno_annotate.annotation.taxonomy import load_taxonomy
from cno_annotate.annotation.timing import DEFAULT_IDLE_SECONDS, ActiveTimer
from cno_annotate.display.catalog import default_pair, series_choices, short_label
from cno_annotate.display.checklist import unit_states, unit_target
from cno_annotate.display.marking import click_placement, polygon_extent
from cno_annotate.display.overlay import READER_COLOURS, Marker, read_markers, reader_markers
from cno_annotate.display.planes import PLANES
from cno_annotate.display.regions import REGION_FRACTIONS
from cno_annotate.display.session import LOWER_VIEWS, VIEW_NAMES, StudyFrame, ViewChange, ViewerSession
from cno_annotate.errors import CnoError
from cno_annotate.io.roles import SequenceRole
from cno_annotate.keymap import ACTIONS, Keymap, load_keymap
from cno_annotate.store import Store
from cno_annotate.store.db import INTERACTIVE_BUSY_TIMEOUT
from cno_annotate.store.postgres import is_permission_error, is_url
from cno_annotate.wording import counted

if TYPE_CHECKING:
    from cno_annotate_ui.study_pacs import CaseFetcher

#: Reader mode: what the reader is told when a series cannot be read (details go to the coordinator log).
READER_LOAD_FAILED = "this series could not be read (the study coordinator's log has the details)"
COORDINATOR_LOG = "coordinator.log"
#: The bone-unit checklist's width at start (logical pixels; the reader can narrow it).
CHECKLIST_WIDTH = 210
#: The worklist's second line of a row (the patient's sex, age, timepoint or visit) starts under the reading code.
WORKLIST_INDENT = " " * 6
#: How often the active reading time measured so far is added to the open read (ms).
TIME_SAVE_MS = 20000
#: How long the read waits for the first image to be painted once everything is loaded (a window never painted).
FIRST_IMAGE_WAIT_MS = 500
#: Inputs that make the reader active (the reading timer counts).
ACTIVITY_EVENTS = (QEvent.KeyPress, QEvent.MouseButtonPress, QEvent.Wheel, QEvent.MouseMove)
ROW_START = "cno_row_start"  # a toolbar action's property: its group starts a row of the toolbar
SEPARATOR_WIDTH = 7  # a toolbar separator and the spacing beside it, in pixels


def coordinator_log(store_root: Path) -> logging.Logger:
    """A logger writing to ``logs/coordinator.log`` in the store folder (full messages, for the coordinator)."""
    logger = logging.getLogger(f"cno_annotate.coordinator.{store_root}")
    if not logger.handlers:
        folder = Path(store_root) / "logs"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            handler: logging.Handler = logging.FileHandler(folder / COORDINATOR_LOG, encoding="utf-8", delay=True)
        except OSError:
            handler = logging.NullHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def is_text_entry(widget) -> bool:
    """Whether a widget takes typed text (keys go to it, not to the image)."""
    if isinstance(widget, QLineEdit):
        return not widget.isReadOnly()
    if isinstance(widget, (QTextEdit, QPlainTextEdit)):
        return not widget.isReadOnly()
    if isinstance(widget, QComboBox):
        return widget.isEditable()
    return isinstance(widget, QAbstractSpinBox)


def owns_key(widget, event: QKeyEvent) -> bool:
    """Whether the focused widget keeps a key that would otherwise go to the active image view.

    Text entries keep every key; a grade row keeps its digits, N, Delete and
    Enter; the sub-site selector its digits too (they grade the first item);
    a selector the reader tabbed into keeps its arrows and letters;
    a button keeps Space and Enter.
    """
    key = event.key()
    if is_text_entry(widget):
        return True
    if isinstance(widget, (GradeSelector, SubsiteBox)):
        return widget.takes(event)
    if isinstance(widget, QComboBox):
        return key in (Qt.Key_Up, Qt.Key_Down, Qt.Key_Return, Qt.Key_Enter) or event.text().isalpha()
    if isinstance(widget, QAbstractButton):
        return key in (Qt.Key_Space, Qt.Key_Return, Qt.Key_Enter)
    return False


def _types_ahead(widget) -> bool:
    """Widgets in which a typed letter selects an entry (so it must not fire a one-key shortcut).

    Lists are not among them: a row clicked in the lesion list or the worklist
    selects it, and the reader's next letter (X, M, E...) acts on it.
    """
    return is_text_entry(widget) or isinstance(widget, QComboBox)


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
        self.series = FittedCombo(short_label, self)
        self.series.setToolTip("Series shown in this view")
        self.series.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.plane = QComboBox(self)
        self.plane.addItems([p.capitalize() for p in PLANES])
        self.plane.setToolTip("Plane (A / C / S)")
        self.preset = FittedCombo(short_label, self)
        self.preset.setToolTip("Window / level preset")
        self.preset.setPlaceholderText("Custom")  # shown when the window is none of the presets (a right drag)
        for selector in (self.series, self.plane, self.preset):
            selector.setFocusPolicy(Qt.NoFocus)  # arrows always go to the image, never to a selector
        self.view = SliceView(session, name, self)
        header = QHBoxLayout()  # the series on a line of its own: its name gets the view's width
        header.setContentsMargins(0, 0, 0, 0)
        controls = QHBoxLayout()
        controls.setContentsMargins(0, 0, 0, 0)
        self.preset.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.tag = StudyTag("", self)  # follow-up reading: which study this view shows (gives way to the series)
        self.tag.setObjectName("study-tag")
        self.tag.hide()
        header.addWidget(self.tag, 0)
        header.addWidget(self.series, 1)
        controls.addWidget(self.plane, 0)
        controls.addWidget(self.preset, 1)
        for selector in (self.series, self.preset):  # the whole name shows in the tooltip and the list
            selector.currentTextChanged.connect(lambda text, s=selector: s.setToolTip(text))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(2)
        layout.addLayout(header)
        layout.addLayout(controls)
        layout.addWidget(self.view, 1)
        self.plane.currentIndexChanged.connect(lambda i: session.set_plane(name, PLANES[i]))
        self.preset.textActivated.connect(lambda text: session.apply_preset(name, text))
        session.changed.connect(self._sync)

    def set_tag(self, text: str) -> None:
        """Name the study the view shows (prior beside current); empty hides the tag."""
        self.tag.setText(text)
        self.tag.setToolTip(text)
        self.tag.setVisible(bool(text))

    def _sync(self, name, what) -> None:
        """Show the session's plane and presets in the selectors."""
        state = self.session.views[self.name]
        if what in (ViewChange.PLANE, ViewChange.VOLUME) and (name is None or name == self.name):
            self.plane.blockSignals(True)
            self.plane.setCurrentIndex(PLANES.index(state.plane))
            self.plane.blockSignals(False)
        if what == ViewChange.VOLUME and name == self.name:
            self.preset.clear()
            self.preset.addItems(list(state.presets))
        if what in (ViewChange.WINDOW, ViewChange.VOLUME) and (name is None or name == self.name):
            self._show_preset(state.preset_name)

    def _show_preset(self, preset: str | None) -> None:
        """Show the preset the window is at (a number key, R, the selector), or "Custom" for one of the reader's."""
        index = -1 if preset is None else self.preset.findText(preset)
        if index != self.preset.currentIndex():
            self.preset.blockSignals(True)
            self.preset.setCurrentIndex(index)
            self.preset.blockSignals(False)


#: Said when a lesion or ROI is placed on the prior study shown beside the case (no UID: reader mode shows it).
ON_PRIOR = "{what} goes on the study being read, not on the prior study beside it: nothing was added"


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
    #: A case could not be opened and nothing will load (the window says why); ``--screenshot`` saves then.
    case_unavailable = Signal(str)

    def __init__(self, store_root: Path | str, reader: str | None = None, reading_study: str | None = None,
                 parent=None, package: Path | None = None, pacs: str | None = None):
        super().__init__(parent)
        self.package = package  # a reading package: reader mode only, plus Export results
        self.setWindowTitle("cno-annotate")
        self.theme = default_theme()
        apply_theme(self.theme)
        self.store_root = store_root if is_url(store_root) else Path(store_root)  # a folder, or a server's URL
        self.store = Store.open(self.store_root, busy_timeout=INTERACTIVE_BUSY_TIMEOUT)  # never freeze on a lock
        self.reader = reader or default_reader()
        self.reading_study = reading_study  # reader mode: blinded, reading codes only
        self.role = rs.role_of(self.store, reading_study, self.reader) if reading_study else ReadingRole.READER
        self.current_code: str | None = None
        self.read_session: ReadSession | None = None
        self.extra_markers: list[Marker] = []
        self.session = ViewerSession()
        self.log = coordinator_log(self.store.folder or self.store.cache_dir)
        self.active_name = VIEW_NAMES[0]
        self.loader = VolumeLoader(self.store_root, self)
        self.images = self.store  # where the volumes are: the store, or (online readers) the study PACS cache
        self._image_study: dict[str, str] = {}  # a case's study UID -> its stand-in in the cache
        self.fetcher: CaseFetcher | None = None
        if pacs and reading_study:  # online reader: cases come from the de-identified study PACS
            from cno_annotate_ui.study_pacs import CaseFetcher  # (reader mode only: not loaded at every start)

            self.fetcher = CaseFetcher(str(self.store_root), reading_study, pacs, self)
            self.fetcher.fetched.connect(self._case_fetched)
            self.fetcher.failed.connect(self._fetch_failed)
            self.fetcher.progress.connect(self._fetch_progress)
        study_settings = rs.get(self.store, reading_study) if reading_study else None
        self.reading_timer = ActiveTimer(study_settings.idle_seconds if study_settings else DEFAULT_IDLE_SECONDS)
        self.show_timer = bool(study_settings and study_settings.show_timer)  # readers see it only if the study says
        self._pending: set[str] = set()
        self._labels: dict[str, str] = {}
        self.panels = {name: ViewPanel(self.session, name) for name in VIEW_NAMES}
        self.layout_name = "1x2"
        self._layout_before_1x1 = "1x2"
        self._study_uid: str | None = None
        self._studies_counted = True  # the study list shows its missing-file warnings (see refresh_studies)
        self._show_next = False  # shown right after the study opens (see will_show)
        self._held: dict[str, tuple[str, Callable[[], None]]] = {}  # view -> (label, delivery) held for the first image
        self._read_due: str | None = None  # a study opened whose read is not open yet
        self._choosing = False  # the study list's selection is changing (_study_chosen)
        self._loaded_due = False  # every view has loaded; all_loaded follows the read's opening
        self._closed = False  # after close, nothing is written to the (closed) store
        rows = QSplitter(Qt.Vertical, self)
        for names in (VIEW_NAMES[:2], VIEW_NAMES[2:]):
            row = QSplitter(Qt.Horizontal, rows)
            for name in names:
                row.addWidget(self.panels[name])
            rows.addWidget(row)
            row.splitterMoved.connect(lambda _pos, _index, moved=row: self._align_rows(moved))
        self.setCentralWidget(rows)
        self._build_studies_dock()
        self._build_lesions_dock()
        self._build_checklist_dock()
        self._build_toolbar()
        self._build_status_bar()
        for name, panel in self.panels.items():
            panel.series.activated.connect(lambda index, n=name: self._series_chosen(n, index))
            panel.view.hovered.connect(self._show_position)
            panel.view.lesion_drawn.connect(self._lesion_drawn)
            panel.view.marker_clicked.connect(self._marker_clicked)
            panel.view.activated.connect(self._view_activated)
            panel.view.roi_drawn.connect(self._roi_drawn)
            panel.view.roi_delete.connect(self._delete_roi)
            panel.view.lesion_delete.connect(self.lesion_panel.delete_selected)
            panel.view.navigated.connect(self.stop_cine)
            panel.view.message.connect(lambda text: self.statusBar().showMessage(text, 10000))
        # the read opens after the first image is painted (out of the paint, after the events queued)
        self.panels[VIEW_NAMES[0]].view.image_shown.connect(lambda: QTimer.singleShot(0, self._first_image_shown))
        self.loader.progress.connect(self._on_progress)
        self.loader.loaded.connect(self._on_loader_loaded)
        self.loader.preview.connect(self._on_loader_preview)
        self.loader.failed.connect(self._on_failed)
        self.session.changed.connect(self._on_session_changed)
        self.comparison = Comparison(self)
        self.resize(1400, 900)
        self._show_layout()
        self._update_undo_actions()  # off until a read is open
        self.refresh_studies(count_missing=False)  # the missing-file warnings once the first image is shown
        # a server store tells the worklist when reads change (README: live progress); SQLite does not
        self.live = None
        if reading_study:
            from cno_annotate_ui.live import live_progress_for  # (reader mode only: not loaded at every start)

            self.live = live_progress_for(self.store, self)
        if self.live is not None:
            self.live.events.connect(self._live_events)
            self.live.reconnected.connect(self._live_resumed)
            self.live.lost.connect(lambda message: self.statusBar().showMessage(message))
        self._watching = False  # the application-wide key filter (eventFilter) is installed: see _watch_keys
        QApplication.instance().applicationStateChanged.connect(self._application_state)
        # SIGTERM, SIGINT, a session's logout or the application quitting: the reading time is saved first
        self._termination = Termination(self.close, self)
        QApplication.instance().commitDataRequest.connect(self._save_before_ending)
        QApplication.instance().aboutToQuit.connect(self._save_before_ending)
        self._time_saver = QTimer(self)
        self._time_saver.setInterval(TIME_SAVE_MS)
        self._time_saver.timeout.connect(self.save_reading_time)
        self._time_saver.start()
        self.apply_keymap(load_keymap())
        self.active_view().setFocus(Qt.OtherFocusReason)  # the keyboard starts on the image

    # -- building ----------------------------------------------------------------
    def _build_studies_dock(self) -> None:
        panel = QWidget(self)
        layout = QVBoxLayout(panel)
        layout.setContentsMargins(2, 2, 2, 2)
        self.search = QLineEdit(panel)
        self.search.setPlaceholderText("Search studies")
        self.search.setClearButtonEnabled(True)
        self.study_list = QListWidget(panel)
        self.study_list.setFocusPolicy(Qt.NoFocus)  # clicking a study leaves the arrows to the image
        # a narrow list (1024 px screens) shows a row's whole text on more lines, never cut at the right; a word
        # longer than the row (a bare study UID) keeps both ends; the whole text is the row's tooltip too
        self.study_list.setWordWrap(True)
        self.study_list.setTextElideMode(Qt.ElideMiddle)
        self.study_list.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.study_list.setResizeMode(QListView.Adjust)
        self.study_list.setAlternatingRowColors(True)  # where one row of two lines ends and the next begins
        self.search.returnPressed.connect(self._open_first_match)
        layout.addWidget(self.search)
        layout.addWidget(self.study_list)
        dock = QDockWidget("Worklist" if self.reading_study else "Studies", self)
        dock.setObjectName("studies")
        if self.reading_study:
            self.search.setPlaceholderText("Search reading codes")
            self.next_button = QPushButton("Next case", panel)
            self.next_button.setToolTip("The next case of your worklist that you have not submitted (Ctrl+N)")
            self.next_button.clicked.connect(self.open_next_case)
            self.next_button.setFocusPolicy(Qt.NoFocus)
            layout.addWidget(self.next_button)
            self.case_info = QLabel("", panel)
            self.case_info.setWordWrap(True)
            layout.addWidget(self.case_info)
            self.next_action = QAction("Next case", self)
            self.next_action.setShortcut(QKeySequence("Ctrl+N"))
            self.next_action.triggered.connect(self.open_next_case)
            self.addAction(self.next_action)
        dock.setWidget(panel)
        dock.setFeatures(QDockWidget.DockWidgetMovable | QDockWidget.DockWidgetFloatable)
        self.addDockWidget(Qt.LeftDockWidgetArea, dock)
        self.search.textChanged.connect(self._filter_studies)
        self.study_list.currentItemChanged.connect(self._study_chosen)
        self.find_action = find = QAction("Search studies", self)
        find.setShortcut(QKeySequence("Ctrl+F"))
        find.triggered.connect(lambda: self.search.setFocus())
        self.addAction(find)

    def _build_lesions_dock(self) -> None:
        self.lesion_panel = LesionPanel(self)
        self.lesion_panel.lesion_selected.connect(self._lesion_selected)
        self.lesion_panel.message.connect(lambda text: self.statusBar().showMessage(text, 10000))
        self.lesion_panel.session_replaced.connect(self._use_read_session)
        self.lesion_panel.finished.connect(self.focus_image)
        self.lesion_panel.about_to_submit.connect(self.save_reading_time)
        dock = QDockWidget("Lesions", self)
        dock.setObjectName("lesions")
        dock.setWidget(self.lesion_panel)
        dock.setFeatures(QDockWidget.DockWidgetMovable | QDockWidget.DockWidgetFloatable)
        self.addDockWidget(Qt.RightDockWidgetArea, dock)

    def _build_checklist_dock(self) -> None:
        """The bone-unit checklist under the study list: click a unit to go to it; mark the rest at once."""
        panel = QWidget(self)
        layout = QVBoxLayout(panel)
        layout.setContentsMargins(2, 2, 2, 2)
        self.checklist = SkeletonChecklist(load_taxonomy(), panel)
        self.checklist.unit_clicked.connect(self.go_to_unit)
        self.checklist.mark_requested.connect(self._mark_unit)
        self.mark_rest_action = QAction("Mark remaining units no lesion", self)
        self.mark_rest_action.setShortcut(QKeySequence("Ctrl+Shift+N"))
        self.mark_rest_action.setToolTip("Every unit not yet reviewed: no lesion, after one confirmation; "
                                         "one Ctrl+Z undoes it (Ctrl+Shift+N)")
        self.mark_rest_action.triggered.connect(self.mark_remaining_units)
        self.addAction(self.mark_rest_action)
        self.mark_rest_button = QPushButton("Rest: no lesion", panel)
        self.mark_rest_button.setToolTip(self.mark_rest_action.toolTip())
        self.mark_rest_button.setFocusPolicy(Qt.NoFocus)
        self.mark_rest_button.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Fixed)  # never widens the dock
        self.mark_rest_button.clicked.connect(self.mark_remaining_units)
        layout.addWidget(self.checklist, 1)
        layout.addWidget(self.mark_rest_button)
        dock = QDockWidget("Bone units", self)
        dock.setObjectName("checklist")
        dock.setWidget(panel)
        dock.setFeatures(QDockWidget.DockWidgetMovable | QDockWidget.DockWidgetFloatable)
        self.addDockWidget(Qt.LeftDockWidgetArea, dock)
        studies = self.findChild(QDockWidget, "studies")
        self.resizeDocks([studies, dock], [1, 3], Qt.Vertical)  # the skeleton gets most of the height
        self.resizeDocks([dock], [CHECKLIST_WIDTH], Qt.Horizontal)  # preferred, not a minimum

    def _build_toolbar(self) -> None:
        bar = QToolBar("View", self)
        self.view_bar = bar
        bar.setObjectName("view")
        bar.setMovable(False)
        self.addToolBar(bar)
        if self.package is not None:  # first, so no window width hides it
            self.export_action = QAction("Export results…", self)
            self.export_action.setShortcut(QKeySequence("Ctrl+E"))
            self.export_action.setToolTip("Write your reads as a file to send to the coordinator (Ctrl+E)")
            self.export_action.triggered.connect(lambda: self.export_results())  # not triggered(checked) as path
            bar.addAction(self.export_action)
            bar.addSeparator()
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
        self.ruler_action = QAction("Ruler", self)
        self.ruler_action.setCheckable(True)
        self.ruler_action.setShortcut(QKeySequence(Qt.Key_D))
        self.ruler_action.setToolTip("Drag to measure a distance in mm (D); Esc leaves; one ruler per view")
        self.ruler_action.toggled.connect(self._set_ruler_mode)
        self.sticky_action = QAction("Keep marking", self)
        self.sticky_action.setCheckable(True)
        self.sticky_action.setToolTip("Stay in mark mode after placing a lesion (off: one lesion per M)")
        self.undo_action = QAction("Undo", self)
        self.undo_action.setShortcuts([QKeySequence("Ctrl+Z")])
        self.undo_action.triggered.connect(lambda: self._edit_read(lambda r: r.undo()))
        self.redo_action = QAction("Redo", self)
        self.redo_action.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        self.redo_action.triggered.connect(lambda: self._edit_read(lambda r: r.redo()))
        for action in (self.undo_action, self.redo_action):
            action.setEnabled(False)  # greyed until a read has a step to undo or redo (_update_undo_actions)
        for action in (self.mark_action, self.sticky_action, self.ruler_action, self.undo_action, self.redo_action):
            bar.addAction(action)
        self._build_roi_actions(bar)
        # A second row: reading tools above, where to look and how to show it below, so that no
        # action falls off the right edge at 1280 px or at 2x scaling (QToolBar does not wrap).
        self.addToolBarBreak()
        bar = QToolBar("Layout", self)
        self.view_bar = bar  # later additions (the prior study's selector) go on this row
        bar.setObjectName("layout")
        bar.setMovable(False)
        self.addToolBar(bar)
        self._tool_bars = [self.findChild(QToolBar, "view"), bar]  # narrower windows add rows (_reflow_toolbars)
        self._tool_rows: list[list[QAction]] = []
        self._build_cine(bar)
        self.cine_action.setProperty(ROW_START, True)  # the second row starts here however wide the window
        bar.addSeparator()
        self.region = QComboBox(self)
        self.region.addItem("Go to region…")
        self.region.addItems(list(REGION_FRACTIONS))
        self.region.setToolTip("Jump to a body region (head to feet)")
        self.region.setFocusPolicy(Qt.NoFocus)
        self.region.activated.connect(self._jump_to_region)
        bar.addWidget(self.region)
        bar.addSeparator()
        self.layout_actions = {}
        for name, keys, tip in (("1x1", "Ctrl+1", "The active view alone, full size (again: back)"),
                                ("1x2", "Ctrl+2", "Two views side by side"),
                                ("2x2", "Ctrl+4", "Four views: the lower row shows the upper series sagittal")):
            action = QAction(name, self)
            action.setCheckable(True)
            action.setShortcut(QKeySequence(keys))
            action.setToolTip(f"{tip} ({keys})")
            action.triggered.connect(lambda _=False, n=name: self.set_layout(n))
            bar.addAction(action)
            self.layout_actions[name] = action
        self.layout_actions["1x2"].setChecked(True)
        bar.addSeparator()
        self.light_action = QAction("Light theme", self)
        self.light_action.setCheckable(True)
        self.light_action.setChecked(self.theme == "light")
        self.light_action.setToolTip("A light theme instead of the dark reading-room one "
                                     "(start with it: CNO_ANNOTATE_THEME=light)")
        self.light_action.toggled.connect(self._set_light)
        bar.addAction(self.light_action)
        if self.package is None and not self.reading_study:  # PACS: the coordinator's own store only
            self.pacs_action = QAction("PACS…", self)
            self.pacs_action.setToolTip("Search a PACS and retrieve a study into the store (Ctrl+Shift+P)")
            self.pacs_action.setShortcut(QKeySequence("Ctrl+Shift+P"))
            self.pacs_action.triggered.connect(self.open_pacs_dialog)
            bar.addAction(self.pacs_action)
            self.send_sr_action = QAction("Send SR to PACS…", self)
            self.send_sr_action.setToolTip("Export the open read as DICOM SR (audited) and store it in a PACS")
            self.send_sr_action.triggered.connect(lambda: self.send_sr_to_pacs())
            bar.addAction(self.send_sr_action)
        self.help_action = help_action = QAction("Help", self)
        help_action.setShortcut(QKeySequence(Qt.Key_F1))
        help_action.setToolTip("Mouse and keyboard (F1)")
        help_action.triggered.connect(self.show_help)
        bar.addAction(help_action)
        self.quit_action = quit_action = QAction("Quit", self)
        quit_action.setShortcut(QKeySequence("Ctrl+Q"))
        quit_action.triggered.connect(self.close)
        self.addAction(quit_action)

    # -- toolbar rows -------------------------------------------------------------------------
    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        super().resizeEvent(event)
        self._reflow_toolbars()

    def showEvent(self, event) -> None:  # noqa: N802 (Qt API)
        super().showEvent(event)
        self._reflow_toolbars()
        # a message shown before the window was (a bad keymap's) did not hide the position text, which Qt
        # then showed with the window, painted over the message: hide it now, while the message lasts
        self.statusBar().hideOrShow()
        if self._read_due is None and not self._pending:  # no first image to wait for
            self._watch_keys()
            if not self._studies_counted:
                self.refresh_studies()

    def _watch_keys(self) -> None:
        """Install the application-wide filter that routes keys to the image (:meth:`eventFilter`), once.

        It is installed once the first image is painted (with the read, :meth:`_open_due_read`):
        the first event it is handed for one of Qt's internal objects (the window's platform
        window) makes PySide create every class and enumeration of QtCore, QtGui and QtWidgets
        (about 70 ms), which the first image need not wait for.
        """
        if not self._watching and not self._closed:
            QApplication.instance().installEventFilter(self)
            self._watching = True

    def _tool_groups(self) -> list[tuple[bool, list[QAction]]]:
        """The toolbars' actions in order, in groups between separators; True for a group that starts a row."""
        groups: list[tuple[bool, list[QAction]]] = []
        for bar in self._tool_bars:
            current: list[QAction] | None = None
            for action in bar.actions():
                if action.isSeparator():
                    current = None
                    continue
                if current is None:
                    current = []
                    groups.append((bool(action.property(ROW_START)), current))
                current.append(action)
        return groups

    def _action_width(self, action: QAction) -> int:
        if not action.isVisible():
            return 0
        widget = next((w for bar in self._tool_bars if (w := bar.widgetForAction(action)) is not None), None)
        return widget.sizeHint().width() + 1 if widget is not None else 0

    def _reflow_toolbars(self) -> None:
        """Put the toolbar's groups on as many rows as the window's width needs: no action hides.

        QToolBar does not wrap: past the right edge its actions go behind a small extension arrow that a
        new reader misses (at 1024 px the prior study's selector, at 800 px half the ROI tools). The groups
        (between separators) fill each row in order; a group wider than a row is split between actions.
        """
        if not hasattr(self, "_tool_bars"):
            return
        limit = self.width() - 16  # the bar's margins and a little room
        rows: list[list[list[QAction]]] = []
        used = 0
        for starts_row, group in self._tool_groups():
            width = sum(self._action_width(a) for a in group)
            if rows and not starts_row and used + SEPARATOR_WIDTH + width <= limit:
                rows[-1].append(group)
                used += SEPARATOR_WIDTH + width
                continue
            rows.append([[]])
            used = 0
            for action in group:  # a new row; split the group where it would leave the row
                step = self._action_width(action)
                if rows[-1][-1] and used + step > limit:
                    rows.append([[]])
                    used = 0
                rows[-1][-1].append(action)
                used += step
        wanted = [[a for group in row for a in group] for row in rows]
        if wanted == self._tool_rows:
            return
        self._tool_rows = wanted
        while len(self._tool_bars) < len(rows):
            bar = QToolBar(f"Tools {len(self._tool_bars) + 1}", self)
            bar.setObjectName(f"tools-{len(self._tool_bars) + 1}")
            bar.setMovable(False)
            self.addToolBarBreak()
            self.addToolBar(bar)
            self._tool_bars.append(bar)
        for bar in self._tool_bars:  # every action leaves its bar first: a widget is in one bar at a time
            for action in bar.actions():
                bar.removeAction(action)
                if action.isSeparator() and action.parent() is bar:
                    action.deleteLater()
        for n, bar in enumerate(self._tool_bars):
            for m, group in enumerate(rows[n] if n < len(rows) else []):
                if m:
                    bar.addSeparator()
                bar.addActions(group)
            bar.setVisible(n < len(rows))

    def _build_roi_actions(self, bar: QToolBar) -> None:
        """ROI tools (E ellipse, B rectangle, P polygon) and the roles of the selected ROI (U muscle, L lesion)."""
        bar.addSeparator()
        self.roi_actions: dict[str, QAction] = {}
        for kind, key, tip in (("ellipse", Qt.Key_E, "drag from its centre"),
                               ("rectangle", Qt.Key_B, "drag from corner to corner"),
                               ("polygon", Qt.Key_P, "click each vertex; double click, Enter or a click on the first "
                                                     "vertex closes it")):
            action = QAction(kind.capitalize(), self)
            action.setCheckable(True)
            action.setShortcut(QKeySequence(key))
            action.setToolTip(f"{kind.capitalize()} region of interest: {tip} "
                              f"({QKeySequence(key).toString()}; Esc cancels)")
            action.toggled.connect(lambda on, k=kind: self._set_roi_tool(k, on))
            bar.addAction(action)
            self.roi_actions[kind] = action
        self.muscle_action = QAction("Muscle", self)
        self.muscle_action.setShortcut(QKeySequence(Qt.Key_U))
        self.muscle_action.setToolTip("Make the selected ROI the read's muscle reference (U): the denominator of "
                                      "every lesion's STIR lesion:muscle ratio")
        self.muscle_action.triggered.connect(lambda: self.set_roi_role("muscle"))
        self.lesion_roi_action = QAction("Lesion ROI", self)
        self.lesion_roi_action.setShortcut(QKeySequence(Qt.Key_L))
        self.lesion_roi_action.setToolTip("Make the selected ROI the selected lesion's ROI (L): its STIR "
                                          "lesion:muscle ratio is stored on the lesion")
        self.lesion_roi_action.triggered.connect(lambda: self.set_roi_role("lesion"))
        bar.addAction(self.muscle_action)
        bar.addAction(self.lesion_roi_action)
        self.extent_action = QAction("Polygon extent", self)
        self.extent_action.setCheckable(True)
        self.extent_action.setShortcut(QKeySequence(Qt.Key_X))
        self.extent_action.setToolTip("Draw the selected lesion's extent as a polygon (X): click each vertex; "
                                      "double click, Enter or a click on the first vertex closes it; Esc cancels")
        self.extent_action.toggled.connect(self._set_extent_tool)
        bar.addAction(self.extent_action)
        self._extent_lesion: str | None = None

    def _build_cine(self, bar: QToolBar) -> None:
        """Cine through the active view's slices (K starts and stops; any navigation stops it) at a set rate."""
        bar.addSeparator()
        self.cine_action = QAction("Cine", self)
        self.cine_action.setCheckable(True)
        self.cine_action.setShortcut(QKeySequence(Qt.Key_K))
        self.cine_action.setToolTip("Play the active view's slices, looping (K starts and stops; any navigation "
                                    "key, the wheel or a click stops it)")
        self.cine_action.toggled.connect(self._set_cine)
        bar.addAction(self.cine_action)
        self.cine_fps = QSpinBox(self)
        self.cine_fps.setRange(1, 30)
        self.cine_fps.setValue(8)
        self.cine_fps.setSuffix(" fps")
        self.cine_fps.setToolTip("Cine frame rate (slices per second)")
        self.cine_fps.setFocusPolicy(Qt.ClickFocus)
        self.cine_fps.valueChanged.connect(lambda fps: self._cine_timer.setInterval(round(1000 / fps)))
        self.cine_fps.lineEdit().returnPressed.connect(self.focus_image)  # the rate is set: keys go back to the image
        bar.addWidget(self.cine_fps)
        self._cine_timer = QTimer(self)
        self._cine_timer.setInterval(round(1000 / self.cine_fps.value()))
        self._cine_timer.timeout.connect(lambda: self.session.cine_step(self.active_name))

    def _set_cine(self, on: bool) -> None:
        if on:
            self._cine_timer.start()
        else:
            self._cine_timer.stop()

    def stop_cine(self) -> None:
        """Stop the cine (a navigation key, the wheel or a click on an image)."""
        self.cine_action.setChecked(False)

    def cine_running(self) -> bool:
        """Whether the cine is playing."""
        return self._cine_timer.isActive()

    def _build_status_bar(self) -> None:
        if not isinstance(self.statusBar(), StatusBar):
            self.setStatusBar(StatusBar(self))  # long lines cut in the middle, whole in the tooltip (2x scaling)
        self.position_label = ElidedLabel("", self)
        self.progress = LoadingBar(self)
        self.progress.hide()
        self.statusBar().addWidget(self.position_label, 1)
        self.statusBar().addPermanentWidget(self.progress)
        self.timer_label = QLabel("", self)
        self.timer_label.setToolTip("Your active reading time of this case (pauses when you are idle or in "
                                    "another window); the reading study shows it")
        self.statusBar().addPermanentWidget(self.timer_label)
        self.timer_label.setVisible(self.show_timer)
        if self.show_timer:
            ticker = QTimer(self)
            ticker.setInterval(1000)
            ticker.timeout.connect(self._show_reading_time)
            ticker.start()

    def open_pacs_dialog(self):
        """The query/retrieve dialog; a retrieved study is listed and opened."""
        from cno_annotate_ui.pacs_dialog import PacsDialog

        dialog = PacsDialog(self.store_root, self)
        dialog.study_retrieved.connect(self._study_retrieved)
        dialog.show()
        self.pacs_dialog = dialog
        return dialog

    def _study_retrieved(self, study_uid: str) -> None:
        self.refresh_studies()
        self.select_study(study_uid)
        self.statusBar().showMessage(f"Study {study_uid} retrieved from the PACS into the store", 15000)

    def send_sr_to_pacs(self, node_name: str | None = None) -> bool:
        """Send the open read as SR to a PACS (asks which one if several); False if nothing was started."""
        from cno_annotate_ui.pacs_dialog import send_sr_in_background
        from PySide6.QtWidgets import QInputDialog

        from cno_annotate.pacs import config

        if self.read_session is None or self._study_uid is None:
            self.statusBar().showMessage("Open a study first: its read is what is sent", 10000)
            return False
        try:
            names = sorted(config.load_nodes())
        except CnoError as exc:
            self.statusBar().showMessage(str(exc), 15000)
            return False
        if not names:
            self.statusBar().showMessage("No PACS registered: add one with 'cno-annotate pacs add'", 15000)
            return False
        if node_name is None:
            node_name = names[0]
            if len(names) > 1:
                node_name, ok = QInputDialog.getItem(self, "Send SR to PACS", "PACS:", names, 0, False)
                if not ok:
                    return False
        self.statusBar().showMessage(f"Sending the SR to {node_name}…")
        self._send_pool = send_sr_in_background(self, self.store_root, node_name, self._study_uid, self.reader,
                                                self.read_session.read.read_id,
                                                lambda message: self.statusBar().showMessage(message, 30000))
        return True

    def export_results(self, path: Path | None = None) -> Path | None:
        """Package mode: write the reader's results file (asks where, unless ``path`` is given)."""
        from cno_annotate import packages

        if path is None:
            chosen, _ = QFileDialog.getSaveFileName(self, "Export results for the coordinator",
                                                    str(Path.home() / f"{self.reading_study}-{self.reader}-results.json"),
                                                    "Results (*.json)")
            if not chosen:
                return None
            path = Path(chosen)
        try:
            written = packages.export_results(packages.open_package(self.package), path, force=True)
        except CnoError as exc:
            self.statusBar().showMessage(f"Results not exported: {exc}", 15000)
            return None
        self.statusBar().showMessage(f"Wrote {written} to {path}: send this file to the coordinator", 15000)
        return path

    # -- studies -------------------------------------------------------------------
    def will_show(self) -> None:
        """Say that the window is shown right after its study is opened (``cno-annotate view`` opens the study
        first, so that the first paint has the image): the read then opens after the first image even when
        every volume was loaded before the window was shown (a start's prefetches)."""
        self._show_next = True

    def refresh_studies(self, count_missing: bool = True) -> None:
        """Fill the study list from the store (reader mode: the worklist of reading codes); the study open stays
        selected.

        ``count_missing=False``: without the missing-file warnings (they stat every file of every study: a
        start fills the list without them and again once the first image is shown).
        """
        if self.reading_study:
            self._refresh_worklist()
            return
        self._studies_counted = count_missing
        self.study_list.blockSignals(True)
        self.study_list.clear()
        for study in self.store.studies(count_missing=count_missing):
            text = "  ".join(x for x in (study.study_date, study.patient_id, study.description) if x)
            tip = counted(study.volumes, "volume")
            text = text or study.study_uid
            if study.missing_files:  # first, so that a narrow list never cuts it off
                text = f"{counted(study.missing_files, 'file')} missing  {text}"
                tip += (f"; {counted(study.missing_files, 'file')} not found where they were imported from: import the "
                        "moved folder again or run 'cno-annotate relocate OLD NEW'")
            item = QListWidgetItem(text)
            if study.missing_files:
                item.setIcon(self.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning))
            item.setData(Qt.UserRole, study.study_uid)
            item.setToolTip(f"{text}\n{tip}")
            self.study_list.addItem(item)
            if study.study_uid == self._study_uid:
                self.study_list.setCurrentItem(item)
        self.study_list.blockSignals(False)
        if self.study_list.count() == 0:
            self.statusBar().showMessage("No studies in the store: import some with 'cno-annotate import PATH'")

    def _study_chosen(self, item: QListWidgetItem | None, _previous=None) -> None:
        if item is None:
            return
        self._choosing = True
        try:
            if self.reading_study:
                self.open_case(item.data(Qt.UserRole))
            else:
                self.open_study(item.data(Qt.UserRole))
        finally:
            self._choosing = False

    def open_case(self, code: str) -> None:
        """Reader mode: open a case by its reading code."""
        self.current_code = code
        study_uid = rs.study_uid_of(self.store, self.reading_study, code)
        self.setWindowTitle(f"cno-annotate — {self.reading_study} — {self.role} {self.reader} — {code}")
        if self.fetcher is not None and study_uid not in self._image_study:
            self.statusBar().showMessage(f"Fetching {code} from the study PACS…")
            self._close_case(f"Fetching {code} from the study PACS…")  # nothing of the previous case stays open
            self.fetcher.fetch(code)  # opens when it is in the cache (_case_fetched)
            return
        try:
            self.open_study(study_uid)
        except Exception as exc:
            if not is_permission_error(exc):
                raise
            self.report("The images of this case are on the study PACS: open the viewer with --pacs NODE "
                        "(README: online readers)", f"Cannot open {code}: {exc}")
            self.case_unavailable.emit(code)

    def _close_case(self, message: str) -> None:
        """No case open (its reading time saved): the views show ``message``, the lesion panel no read."""
        self.save_reading_time()
        self.comparison.case_closed()
        if self.read_session is not None:
            self.read_session.changed.disconnect(self._read_changed)
            self.read_session = None
        self._study_uid = None
        self.lesion_panel.set_session(None)
        self.case_info.setText(html.escape(message))
        self.extra_markers = []  # an adjudicator's readers' lesions of the previous case
        for name in VIEW_NAMES:
            self.panels[name].series.clear()
            self.session.clear(name, message if name in VIEW_NAMES[:2] else "")
        self._refresh_markers()
        self._update_undo_actions()

    def _case_fetched(self, code: str, image_study_uid: str) -> None:
        """A case arrived in the study PACS cache: show it (unless the reader moved on to another case).

        A prior asked for by Prior beside current goes beside the case being read.
        """
        if self._closed:
            return
        if self.images is self.store:
            from cno_annotate.study_pacs import image_cache, open_cache

            self.images = open_cache(self.store)
            self.loader.store_root = image_cache(self.store)
        study_uid = rs.study_uid_of(self.store, self.reading_study, code)
        self._image_study[study_uid] = image_study_uid
        if code == self.current_code:
            self.statusBar().clearMessage()
            self.open_study(study_uid)
        else:
            self.comparison.prior_fetched(code)

    def has_images_of(self, study_uid: str) -> bool:
        """Whether the images of a study are at hand (always, but for an online case not yet fetched)."""
        return self.fetcher is None or study_uid in self._image_study

    def image_study_of(self, study_uid: str) -> str:
        """The study UID of a study's images where they are (an online case: its stand-in in the cache)."""
        return self._image_study.get(study_uid, study_uid)

    def volumes_of(self, study_uid: str) -> list:
        """The volumes of a study, from where its images are (the store, or the study PACS cache)."""
        return self.images.volumes(self.image_study_of(study_uid))

    def fetch_case(self, code: str | None) -> None:
        """Online: fetch a case of the worklist from the study PACS (``_case_fetched`` when it is in)."""
        if self.fetcher is not None and code:
            self.fetcher.fetch(code)

    def _fetch_failed(self, code: str, message: str) -> None:
        self.report(f"Cannot fetch {code} from the study PACS: {message}", f"Cannot fetch {code}: {message}")
        if code == self.current_code and self._study_uid is None:  # the case is not open: the views say why
            for name in VIEW_NAMES[:2]:
                self.session.clear(name, f"Cannot fetch {code} from the study PACS ({message}); "
                                         "click the case in the worklist to try again")
        elif code != self.current_code:  # the prior asked for by Prior beside current: the case is read alone
            self.comparison.prior_unavailable(code)

    def _fetch_progress(self, code: str, received: int, expected: int) -> None:
        percent = 100 * received / max(expected, 1)
        self.statusBar().showMessage(f"Fetching {code} from the study PACS: {received} of {expected} images "
                                     f"({percent:.0f} %)")

    def _refresh_worklist(self) -> None:
        if self._closed:
            return  # asked for before the window closed (the store is closed now)
        self.study_list.blockSignals(True)
        current = self.current_code
        self.study_list.clear()
        for entry in rs.worklist(self.store, self.reading_study, self.reader):
            extra = []
            if "sex" in entry:
                extra.append(f"{entry['sex'] or '?'} {entry['age_years'] if entry['age_years'] is not None else '?'} y")
            if "timepoint" in entry:
                extra.append(f"{entry['patient_code']} tp {entry['timepoint']}/{entry['timepoints']}")
            if "visit" in entry:  # hidden order: the visit's letter, never which visit is earlier
                extra.append(f"{entry['patient_code']} visit {entry['visit']} of {entry['visits']}")
            text = f"{entry['position']:3}. {entry['reading_code']}  {entry['status']}"
            # the patient's details on a line of their own: a row never wraps in the middle of them
            item = QListWidgetItem(text + (f"\n{WORKLIST_INDENT}({', '.join(extra)})" if extra else ""))
            item.setToolTip(item.text())
            item.setData(Qt.UserRole, entry["reading_code"])
            item.setData(Qt.UserRole + 1, entry["status"])
            self.study_list.addItem(item)
            if entry["reading_code"] == current:
                self.study_list.setCurrentItem(item)
        self.study_list.blockSignals(False)

    def _live_resumed(self) -> None:
        """Listening again (after a server restart): re-read the worklist, notifications may have been missed."""
        self._refresh_worklist()
        if self.statusBar().currentMessage().startswith("Live updates stopped"):
            self.statusBar().showMessage("Live updates resumed", 10000)

    def _live_events(self, events: list) -> None:
        """The server announced reads or worklists changing: show this study's worklist as it is now."""
        if not self._closed and any(e.reading_study == self.reading_study for e in events):
            self._refresh_worklist()

    def open_next_case(self) -> bool:
        """Open the next case of the worklist not yet submitted; False (and a message) when there is none."""
        rows = {self.study_list.item(n).data(Qt.UserRole): self.study_list.item(n)
                for n in range(self.study_list.count())}
        entries = [{"reading_code": code, "status": item.data(Qt.UserRole + 1)} for code, item in rows.items()]
        code = rs.next_unsubmitted(entries, self.current_code)
        if code is not None:
            self.study_list.setCurrentItem(rows[code])
            return True
        done = "Every case of your worklist is submitted"
        self.statusBar().showMessage(done, 10000)
        if self.current_code is None:  # nothing open: the views say it for as long as they are empty
            for name in VIEW_NAMES[:2]:
                self.session.clear(name, f"{done}: click a case in the worklist to look at it" + (
                    "; Export results (Ctrl+E) writes the file for the coordinator" if self.package else ""))
        return False

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
        volumes = self.volumes_of(study_uid)
        choices = series_choices(volumes, blinded=self.reading_study is not None)
        self._labels = dict(choices)
        for panel in self.panels.values():
            panel.series.clear()
            for volume_id, label in choices:
                panel.series.addItem(label, volume_id)
        self._leave_read()
        self._read_due = study_uid  # opened once the first image is painted (see _open_due_read)
        self._study_uid = study_uid
        for name in LOWER_VIEWS:
            self.session.clear(name)
        pair = default_pair(volumes)
        self._pending.update(name for name, volume_id in zip(VIEW_NAMES, pair) if volume_id is not None)
        for name, volume_id in zip(VIEW_NAMES, pair):
            if volume_id is None:  # a study of one series: nothing failed, the view waits for a choice
                self.panels[name].series.setCurrentIndex(-1)
                self.session.clear(name, "No second series in this study: pick one above to show it here too "
                                         "(in another plane, for example)")
                continue
            self.show_volume(name, volume_id)
        left = self.session.views[VIEW_NAMES[0]]
        if VIEW_NAMES[0] not in self._pending and not left.ready:  # no image to wait for
            QTimer.singleShot(0, self._open_due_read)
        if self.layout_name == "2x2":
            self._fill_lower_views()
        self.comparison.study_opened(study_uid)
        if not is_text_entry(QApplication.focusWidget()):
            self.focus_image()  # a study just opened: the keyboard is on its image

    def _leave_read(self) -> None:
        """Save the open read's reading time and close it: the panel, markers and checklist show no read."""
        self.save_reading_time()
        if self.read_session is None:
            return
        self.read_session.changed.disconnect(self._read_changed)
        self.read_session = None
        self.lesion_panel.set_session(None)
        self._refresh_markers()
        self._update_undo_actions()

    def _first_image_due(self) -> bool:
        """Whether the left view's first image of the study is still to be painted in a window shown (or about to be)."""
        return self.panels[VIEW_NAMES[0]].view.image_unpainted() and (self.isVisible() or self._show_next)

    def _first_image_shown(self) -> None:
        """The left view painted its first image: the views held back for it next, then the read."""
        if self._show_held():
            QTimer.singleShot(0, self._open_due_read)  # their first paint before the read's 50 ms
        else:
            self._open_due_read()

    def _show_held(self) -> bool:
        """Show the volumes loaded before the first image that were held back for it; whether there were any.

        A start's prefetches can deliver both views' volumes before the window is painted; the left
        view's image (the STIR) then comes first, the others a frame later.
        """
        held, self._held = self._held, {}
        for name, (label, deliver) in held.items():
            if self.session.views[name].status == "loading" and self.session.views[name].label == label:
                deliver()  # still asked for
        return bool(held)

    def _hold(self, name: str, deliver: Callable[[], None]) -> bool:
        """Hold a delivery to a view other than the left one while the left view's first image is due; whether held."""
        if name == VIEW_NAMES[0] or not self._first_image_due():
            return False
        self._held[name] = (self.session.views[name].label, deliver)  # a later delivery replaces it
        return True

    def _open_due_read(self) -> None:
        """Open the read of the study just opened, if it is not open yet.

        A study's images are loaded first and its read (the lesion panel, markers and checklist,
        about 50 ms to build) is opened when the left view has painted its first image, when
        loading ends or fails, or before the first key press, click or wheel step in the window
        (once the key filter is installed, which is here), whichever comes first: so the first
        image is not held up by the panel.
        """
        self._show_held()  # (no first image came: the held views need not wait for it)
        if self._read_due is not None and not self._closed:
            self.open_read(self._read_due)
        if not self._studies_counted and not self._closed:
            self.refresh_studies()
        self._watch_keys()
        if self._loaded_due:
            self._loaded_due = False
            self.all_loaded.emit()

    def open_read(self, study_uid: str) -> None:
        """Open (or start) this reader's read of the study (the time spent on the case before is saved to it)."""
        self._read_due = None
        self.save_reading_time()
        self.reading_timer.activity()  # opening a case is an input: the new case's time starts now
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
            self.report("Cannot open your read of this case (the coordinator's log has the details)",
                        f"Cannot open the read: {exc}")
        else:
            self.read_session.changed.connect(self._read_changed)
            item = self.study_list.currentItem()
            if self.reading_study and item is not None and item.data(Qt.UserRole + 1) == "not started":
                if self._choosing:  # the list is not rebuilt while its selection is changing
                    QTimer.singleShot(0, self._refresh_worklist)  # the case is now opened (after this selection ends)
                else:
                    self._refresh_worklist()
            if self.store.read_only:
                self.statusBar().showMessage("The store is read-only (read-only media): the read is shown, "
                                             "it cannot be changed or submitted here")
        self.lesion_panel.set_session(self.read_session)
        self._refresh_markers()
        self._update_undo_actions()

    def _use_read_session(self, session: ReadSession) -> None:
        """Switch to another read of the same study (a new version of a submitted read)."""
        self.save_reading_time()
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
        loaded = self.loader.take_loaded(name, volume_id)  # loaded already while the window was starting
        if loaded is not None:
            if not self._hold(name, lambda: self._on_loaded(name, *loaded)):  # else a frame after the left's
                self._on_loaded(name, *loaded)
            return
        self.loader.load(name, volume_id)
        self._update_progress()

    # -- loading -------------------------------------------------------------------
    def _on_progress(self, name: str, fraction: float) -> None:
        view = self.session.views[name]
        if view.previewing:  # its first station is shown: only the bar moves on
            view.progress = fraction
        else:
            self.session.set_loading(name, view.label, fraction)
        self._update_progress()

    def _on_loader_preview(self, name: str, volume, facts) -> None:
        """A preview from the loader: held, like a volume, while the left view's first image is due."""
        if not self._hold(name, lambda: self._on_preview(name, volume, facts)):
            self._on_preview(name, volume, facts)

    def _on_loader_loaded(self, name: str, volume, facts) -> None:
        """A volume from the loader: held while the left view's first image is due (the STIR is painted first)."""
        if not self._hold(name, lambda: self._on_loaded(name, volume, facts)):
            self._on_loaded(name, volume, facts)

    def _on_preview(self, name: str, volume, facts) -> None:
        """Show the first station of a composed volume while the others are read."""
        if self.session.views[name].status == "loading":
            self.session.set_volume(name, volume, self.session.views[name].label, facts)

    def _on_loaded(self, name: str, volume, facts) -> None:
        self.session.set_volume(name, volume, self.session.views[name].label, facts)
        errors = volume.load.errors
        if errors:
            from cno_annotate.volumes import unread_files_message  # (its image readers are the loader's)

            label = self.session.views[name].label
            slices = f"{len(errors)} slice{'' if len(errors) == 1 else 's'}"
            self.report(f"{label}: {slices} could not be read (hatched in the view)",
                        f"{label}: {unread_files_message(errors)} (hatched in the view); first: "
                        f"{errors[0]['path']}: {errors[0]['reason']}")
        self._finish(name)

    def _on_failed(self, name: str, message: str) -> None:
        if name == VIEW_NAMES[0]:
            QTimer.singleShot(0, self._open_due_read)  # no first image to wait for
        label = self.session.views[name].label
        self.session.set_error(name, READER_LOAD_FAILED if self.reading_study else message)
        self.report(f"Cannot load {label}: {READER_LOAD_FAILED}", f"Cannot load {label}: {message}")
        self._finish(name)

    def report(self, public: str, detail: str, msecs: int = 15000) -> None:
        """Show a problem in the status bar; in reader mode only ``public`` (no paths, UIDs or header text).

        ``detail``, the full message, always goes to the coordinator log.
        """
        where = f"[{self.reading_study} {self.current_code}] " if self.reading_study else ""
        self.log.warning("%s%s", where, detail)
        self.statusBar().showMessage(public if self.reading_study else detail, msecs)

    def _finish(self, name: str) -> None:
        self._pending.discard(name)
        self._update_progress()
        if self._pending:
            return
        left = self.panels[VIEW_NAMES[0]].view
        if self._read_due is not None and left.image_unpainted() and (self.isVisible() or self._show_next):
            self._loaded_due = True  # said with the read open, after the first image (see _open_due_read)
            QTimer.singleShot(FIRST_IMAGE_WAIT_MS, self._open_due_read)  # should the window not be painted
            return
        self._open_due_read()  # (if no image was painted: every view failed or is empty)
        self.all_loaded.emit()

    def _update_progress(self) -> None:
        loading = [v for v in self.session.views.values() if v.status == "loading" or v.previewing]
        self.progress.setVisible(bool(loading))
        if loading:
            self.progress.set_name(loading[0].label)
            self.progress.setValue(int(100 * min(v.progress for v in loading)))

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
        if self.role == ReadingRole.ADJUDICATOR:
            reads = rs.adjudication_reads(self.store, self.reading_study, self.current_code, self.reader)
            for n, read in enumerate(reads):
                colour = READER_COLOURS[n % len(READER_COLOURS)]  # as reader_markers colours their markers
                total = read_document(read)["scores"]["total"]
                lines.append(f"<span style='color:{colour}'>{html.escape(read.reader)}</span>: "
                             f"total {total}, {counted(len(read.lesions), 'lesion')}")
            self.extra_markers = reader_markers(reads)
        self.case_info.setText("<br>".join(lines))

    def set_markers(self, markers: list[Marker]) -> None:
        """Show extra markers (not lesions of the open read) in both views."""
        self.extra_markers = list(markers)
        self._refresh_markers()

    def _refresh_markers(self) -> None:
        markers = list(self.extra_markers)
        if self.read_session is not None:
            markers += read_markers(self.read_session.read.lesions, self.read_session.taxonomy,
                                    self.lesion_panel.selected)
        self.session.set_markers(markers)
        rois = self.read_session.read.rois if self.read_session is not None else []
        self.session.set_rois(rois, self._roi_titles(), self.session.selected_roi)
        self._refresh_checklist()

    # -- reading time ----------------------------------------------------------------------
    def save_reading_time(self) -> None:
        """Add the active time measured since the last save to the open read (kept in memory if the store refuses)."""
        seconds = self.reading_timer.take()
        if self.read_session is None or seconds <= 0 or self._closed:
            return
        try:
            self.read_session.add_reading_time(seconds)
        except CnoError as exc:  # a store locked by another program: try again at the next save
            self.reading_timer.give_back(seconds)
            self.log.warning("reading time not saved yet: %s", exc)

    def _save_before_ending(self, *_args) -> None:
        """The session logs out or the application quits: the reading time and a comment being typed are saved."""
        if not self._closed:
            self.lesion_panel.flush()
            self.save_reading_time()

    def _application_state(self, state) -> None:
        """The window lost (timer pauses) or regained (restarts) the focus."""
        self.reading_timer.focus_changed(state == Qt.ApplicationActive)

    def reading_time_text(self) -> str:
        """The open case's active reading time as shown to the reader (when the study allows)."""
        stored = self.read_session.reading_time if self.read_session is not None else 0.0
        seconds = int(stored + self.reading_timer.elapsed() - self.reading_timer.taken)
        paused = "" if self.reading_timer.running else " (paused)"
        return f"Reading time {seconds // 60}:{seconds % 60:02d}{paused}"

    def _show_reading_time(self) -> None:
        self.timer_label.setText(self.reading_time_text())

    def _refresh_checklist(self) -> None:
        """Colour the checklist by the open read's unit states."""
        session = self.read_session
        if session is None:
            self.checklist.set_states({}, editable=False)
            self.mark_rest_button.setEnabled(False)
            return
        if self.checklist.taxonomy is not session.taxonomy:
            self.checklist.set_taxonomy(session.taxonomy)
        self.checklist.set_states(unit_states(session.read, session.taxonomy), editable=session.editable)
        remaining = len(session.remaining_units())
        self.mark_rest_button.setEnabled(remaining > 0 and session.editable)
        self.mark_rest_button.setText(f"Rest: no lesion ({remaining})" if remaining else "All units reviewed")

    def go_to_unit(self, unit_id: str) -> None:
        """Move the views to a bone unit (its place in this patient, from the schematic) and bring it into view."""
        ready = [name for name, v in self.session.views.items() if v.ready]
        if not ready:
            self.statusBar().showMessage("Open a study to go to a bone unit", 5000)
            return
        name = self.active_name if self.active_name in ready else ready[0]
        view = self.session.views[name]
        volume, _, point = view.loaded()
        target = unit_target(volume, self.checklist.taxonomy, unit_id, point)
        self.session.set_point(name, target)
        self.session.reveal(target)
        self.focus_image()

    def mark_remaining_units(self) -> None:
        """Mark every unit not yet reviewed "no lesion", after one confirmation (Enter accepts); one undo step."""
        session = self.read_session
        if session is None or not session.editable:
            self.statusBar().showMessage("Open a draft read to mark bone units", 5000)
            return
        remaining = session.remaining_units()
        if not remaining:
            self.statusBar().showMessage("Every bone unit is already reviewed", 5000)
            return
        if self.confirm(f"Mark the {counted(len(remaining), 'bone unit')} not yet reviewed as 'no lesion'?",
                        "Units with a lesion or a mark keep it. Ctrl+Z undoes this in one step."):
            try:
                marked = session.mark_remaining()
            except CnoError as exc:  # refused whole (changed elsewhere, submitted, not written): say so, not success
                self.statusBar().showMessage(f"No unit was marked: {exc}", 10000)
            else:
                self.statusBar().showMessage(f"{counted(len(marked), 'unit')} marked no lesion (Ctrl+Z undoes)", 10000)
        self.focus_image()

    def confirm(self, question: str, detail: str) -> bool:
        """Ask one yes/no question; Enter accepts, Esc declines."""
        box = QMessageBox(QMessageBox.Question, "cno-annotate", question, QMessageBox.Yes | QMessageBox.Cancel, self)
        box.setInformativeText(detail)
        box.setDefaultButton(QMessageBox.Yes)
        answer = box.exec() == QMessageBox.Yes
        self.activateWindow()  # the keyboard comes back to this window's image
        return answer

    def _mark_unit(self, unit_id: str, mark: str) -> None:
        self._edit_read(lambda r: r.mark_unit(unit_id, mark or None))

    def _read_changed(self, change: ReadChange) -> None:
        self._refresh_markers()
        self._update_undo_actions()
        if change.kind in (ReadChangeKind.UNDO, ReadChangeKind.REDO):  # (what the last message said is undone)
            what = change.label.replace("_", " ")
            self.statusBar().showMessage(f"Undone: {what} (Ctrl+Y redoes it)" if change.kind is ReadChangeKind.UNDO
                                         else f"Redone: {what} (Ctrl+Z undoes it)", 10000)
        QTimer.singleShot(0, self._keep_keyboard)
        item = self.study_list.currentItem()
        started = item is not None and item.data(Qt.UserRole + 1) in ("not started", "opened")
        if self.reading_study and (change.kind is ReadChangeKind.SUBMIT or started):
            self._refresh_worklist()  # submitted, or the first change made the case a draft

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

    def _set_roi_tool(self, kind: str, on: bool) -> None:
        """Draw ROIs of this kind with the left button (one ROI, then back to navigation)."""
        if on:
            self.mark_action.setChecked(False)
            self.ruler_action.setChecked(False)
            for other, action in self.roi_actions.items():
                if other != kind:
                    action.setChecked(False)
        elif any(a.isChecked() for a in self.roi_actions.values()):
            return  # another tool took over
        for panel in self.panels.values():
            panel.view.cancel_roi()
            panel.view.roi_tool = kind if on else None
            panel.view.setCursor(Qt.CrossCursor if on else Qt.ArrowCursor)
        if on:
            self.statusBar().showMessage(f"{kind.capitalize()} ROI: {self.roi_actions[kind].toolTip()}", 8000)

    def _set_extent_tool(self, on: bool) -> None:
        """Draw the selected lesion's polygon extent (clicks on the image, as for a polygon ROI)."""
        lesion_id = self.lesion_panel.selected if on else None
        if on and not lesion_id:
            self.statusBar().showMessage("Select the lesion first (click its marker or pick it in the list)", 10000)
            self.extent_action.setChecked(False)
            return
        if on:
            for action in (self.mark_action, self.ruler_action, *self.roi_actions.values()):
                action.setChecked(False)
        self._extent_lesion = lesion_id
        for panel in self.panels.values():
            panel.view.cancel_roi()
            panel.view.roi_tool = "polygon" if on else None
            panel.view.setCursor(Qt.CrossCursor if on else Qt.ArrowCursor)
        if on:
            self.statusBar().showMessage(f"Polygon extent of {lesion_id}: {self.extent_action.toolTip()}", 8000)

    def _roi_drawn(self, name: str, kind: str, points) -> None:
        """Keep a drawn ROI with the read (one undo step) and select it; or set the lesion's polygon extent."""
        view = self.session.views[name]
        if view.frame != StudyFrame.CURRENT:
            self.extent_action.setChecked(False)
            self.roi_actions[kind].setChecked(False)
            self.statusBar().showMessage(ON_PRIOR.format(what="An extent" if self._extent_lesion else "An ROI"), 10000)
            return
        if self._extent_lesion is not None:
            lesion_id = self._extent_lesion
            self.extent_action.setChecked(False)
            extent = polygon_extent(view, points)
            before = self.read_session.read.revision if self.read_session is not None else None
            self._edit_read(lambda r: r.update_lesion(lesion_id, extent=extent))
            if self.read_session is not None and self.read_session.read.revision != before:
                self.statusBar().showMessage(f"Polygon extent of {lesion_id} set (Ctrl+Z undoes it)", 10000)
            return
        self.roi_actions[kind].setChecked(False)  # one ROI per key press
        if self.read_session is None or not view.ready:
            self.statusBar().showMessage("Open a study before drawing ROIs", 10000)
            return
        try:
            roi_id = self.read_session.add_roi(kind, view.plane, [tuple(float(v) for v in p) for p in points],
                                               view.volume.volume_id)
        except CnoError as exc:
            self.statusBar().showMessage(str(exc), 10000)
            return
        self.session.select_roi(roi_id)
        self.statusBar().showMessage(f"{roi_id} drawn: U makes it the muscle reference, L the selected lesion's ROI, "
                                     f"Delete removes it", 10000)

    def _delete_roi(self, roi_id: str) -> None:
        self._edit_read(lambda r: r.delete_roi(roi_id, stir=self.stir_volume()))

    def stir_volume(self):
        """The case's STIR volume shown in a view (the ratios are measured on it), or None; never the prior's."""
        return next((v.volume for v in self.session.views.values()
                     if v.ready and v.frame == StudyFrame.CURRENT and v.volume.role == SequenceRole.STIR), None)

    def set_roi_role(self, role: str) -> None:
        """Make the selected ROI the muscle reference or the selected lesion's ROI."""
        roi_id = self.session.selected_roi
        if self.read_session is None or roi_id is None:
            self.statusBar().showMessage("Select an ROI first: draw one (E, B, P) or click inside one", 10000)
            return
        lesion_id = self.lesion_panel.selected if role == "lesion" else None
        if role == "lesion" and not lesion_id:
            self.statusBar().showMessage("Select the lesion first (click its marker or pick it in the list)", 10000)
            return
        stir = self.stir_volume()
        self._edit_read(lambda r: r.set_roi_role(roi_id, role, lesion_id, stir=stir))
        self.session.select_roi(roi_id)
        self._say_roi_role(roi_id)
        if stir is None:
            self.statusBar().showMessage("No STIR series is shown: the STIR lesion:muscle ratio cannot be measured",
                                         10000)

    def _say_roi_role(self, roi_id: str) -> None:
        """Say in the status bar what an ROI became (U, L): the muscle reference, or a lesion's ROI and its ratio."""
        read = self.read_session.read
        roi = next((r for r in read.rois if r.roi_id == roi_id), None)
        if roi is None or str(roi.role) == "measurement":
            return  # refused: the refusal is the message
        if str(roi.role) == "muscle":
            self.statusBar().showMessage(f"{roi_id} is the muscle reference (Ctrl+Z undoes it)", 10000)
            return
        ratio = read.lesion(roi.lesion_id).stir_muscle_ratio if roi.lesion_id else None
        said = f": STIR lesion:muscle {ratio:.2f}" if ratio is not None else ": no ratio yet (no muscle ROI, U)"
        self.statusBar().showMessage(f"{roi_id} is {roi.lesion_id}'s ROI{said} (Ctrl+Z undoes it)", 10000)

    def _roi_titles(self) -> dict[str, str]:
        """What each ROI's label says: its id and role, and a lesion ROI's ratio."""
        titles = {}
        read = self.read_session.read if self.read_session is not None else None
        for roi in read.rois if read is not None else []:
            if roi.role == "muscle":
                titles[roi.roi_id] = f"{roi.roi_id} muscle (reference)"
            elif roi.role == "lesion" and read is not None:
                ratio = read.lesion(roi.lesion_id).stir_muscle_ratio if roi.lesion_id else None
                shown = f"STIR lesion:muscle {ratio:.2f}" if ratio is not None else "no ratio yet (muscle ROI: U)"
                titles[roi.roi_id] = f"{roi.roi_id} lesion {roi.lesion_id}  {shown}"
            else:
                titles[roi.roi_id] = roi.roi_id
        return titles

    def _set_ruler_mode(self, on: bool) -> None:
        if on:
            self.mark_action.setChecked(False)
            for action in self.roi_actions.values():
                action.setChecked(False)
        for panel in self.panels.values():
            panel.view.ruler_mode = on
            if not self.mark_action.isChecked():
                panel.view.setCursor(Qt.CrossCursor if on else Qt.ArrowCursor)

    def _set_mark_mode(self, on: bool) -> None:
        if on:
            self.ruler_action.setChecked(False)
            for action in self.roi_actions.values():
                action.setChecked(False)
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
        if view.frame != StudyFrame.CURRENT:
            self.statusBar().showMessage(ON_PRIOR.format(what="A lesion"), 10000)
            return
        placed = click_placement(view.volume, self.read_session.taxonomy, centre)
        try:
            lesion_id = self.read_session.add_lesion(centre, placed.volume_id, placed.voxel, side=placed.side,
                                                     extent=extent)
        except CnoError as exc:
            self.statusBar().showMessage(str(exc), 10000)
            return
        if not self.sticky_action.isChecked():
            self.mark_action.setChecked(False)  # one lesion per M unless marking is kept on
        self.lesion_panel.select(lesion_id, focus_site=True)
        if placed.site_id is None:
            self.statusBar().showMessage("No site proposed: this series does not show the whole body (vertex to "
                                         "soles); type the site, e.g. dist fem", 10000)
        else:
            self.lesion_panel.propose_site(placed.site_id)  # Enter takes the bone under the click; typing searches

    def _marker_clicked(self, key: str) -> None:
        """A click on a marker selects its lesion (markers of other readers only move the crosshair)."""
        if key.startswith("ghost:"):
            self.comparison.select_ghost(key.removeprefix("ghost:"))
            return
        if self.read_session is not None and key in {lesion.lesion_id for lesion in self.read_session.read.lesions}:
            self.lesion_panel.select(key)

    def _lesion_selected(self, lesion_id: str) -> None:
        if lesion_id and self.read_session is not None:
            lesion = self.read_session.read.lesion(lesion_id)
            point = np.array(lesion.position, float)
            self.session.set_point(self.active_name, point)
            self.session.reveal(point)
        self._refresh_markers()

    def _jump_to_region(self, index: int) -> None:
        if index <= 0:
            return
        region = self.region.itemText(index)
        ready = [name for name, v in self.session.views.items() if v.ready]
        if ready:
            self.session.jump_to_region(self.active_name if self.active_name in ready else ready[0], region)
        self.region.setCurrentIndex(0)
        self.focus_image()

    def keyed_actions(self) -> dict[str, QAction]:
        """The window's actions that the keymap names, by action id."""
        actions = {"mark_lesion": self.mark_action, "ruler": self.ruler_action, "undo": self.undo_action,
                   "redo": self.redo_action, "mark_remaining": self.mark_rest_action,
                   "link_position": self.link_action, "link_zoom": self.zoom_link_action, "search": self.find_action,
                   "help": self.help_action, "quit": self.quit_action, "roi_muscle": self.muscle_action,
                   "roi_lesion": self.lesion_roi_action, "cine": self.cine_action,
                   "polygon_extent": self.extent_action,
                   **{f"roi_{kind}": action for kind, action in self.roi_actions.items()},
                   **{f"layout_{name}": action for name, action in self.layout_actions.items()}}
        if self.reading_study:
            actions["next_case"] = self.next_action
        if self.package is not None:
            actions["export_results"] = self.export_action
        if getattr(self, "pacs_action", None) is not None:  # the coordinator's own store only
            actions["pacs"] = self.pacs_action
        return actions

    def apply_keymap(self, keymap: Keymap) -> None:
        """Give each action its keys; a problem of the reader's keymap file is told in one line (defaults kept)."""
        self.keymap = keymap
        for action_id, action in self.keyed_actions().items():
            keys = keymap.keys[action_id]
            action.setShortcuts([QKeySequence(k) for k in keys])
            action.setToolTip(f"{ACTIONS[action_id][0]} ({', '.join(keys) or 'no key'})")
        self.mark_rest_button.setToolTip(self.mark_rest_action.toolTip())
        for problem in keymap.problems:
            self.log.warning("keymap: %s", problem)
        if keymap.problems:
            more = f" (and {len(keymap.problems) - 1} more: see F1)" if len(keymap.problems) > 1 else ""
            self.statusBar().showMessage(f"Keymap: {keymap.problems[0]}{more}", 30000)

    def key_bindings(self) -> dict[str, list[str]]:
        """Each keyed action's keys as the window has them (what F1 lists)."""
        return {action_id: [k.toString(QKeySequence.PortableText) for k in action.shortcuts()]
                for action_id, action in self.keyed_actions().items()}

    def show_help(self) -> None:
        """Show every mouse and keyboard action, the keys as this window has them."""
        from cno_annotate_ui.help import HelpDialog  # (F1: not loaded at every start)

        HelpDialog(self, self.key_bindings(), self.keymap).exec()

    def _show_position(self, lps) -> None:
        point = lps if lps is not None else next(
            (v.point for v in self.session.views.values() if v.ready), None)
        if point is None:
            self.position_label.setText("")
            return
        parts = [f"LPS {point[0]:.1f}, {point[1]:.1f}, {point[2]:.1f} mm"]
        visible = self.visible_views()
        series: dict[str, tuple[str, list[str]]] = {}  # one entry per series shown (2x2 shows each twice)
        for name, view in self.session.views.items():
            if not view.ready or name not in visible:
                continue
            value = view.value_at(point)
            shown, planes = series.setdefault(view.label, ("outside" if value is None else f"{value:.0f}", []))
            planes.append(f"{view.plane} {view.slice_index + 1}/{view.mapping.slices}")
        parts += [f"{label}: {shown} ({', '.join(planes)})" for label, (shown, planes) in series.items()]
        self.position_label.setText("   |   ".join(parts))

    def _on_session_changed(self, name, what) -> None:
        if what in (ViewChange.POINT, ViewChange.VOLUME, ViewChange.PLANE):
            self._show_position(None)

    # -- layouts ---------------------------------------------------------------------------
    def set_layout(self, name: str) -> None:
        """Show 1x1 (the active view alone; asked again, back to the layout before), 1x2 or 2x2."""
        if name == "1x1" and self.layout_name == "1x1":
            name = self._layout_before_1x1
        elif name == "1x1":
            self._layout_before_1x1 = self.layout_name
        self.layout_name = name
        for layout, action in self.layout_actions.items():
            action.setChecked(layout == name)
        self._show_layout()
        if name == "2x2" and self._study_uid is not None:
            self._fill_lower_views()
        self.focus_image()

    def visible_views(self) -> list[str]:
        """The views the layout shows, in reading order."""
        if self.layout_name == "1x1":
            return [self.active_name]
        return list(VIEW_NAMES[: 4 if self.layout_name == "2x2" else 2])

    def _show_layout(self) -> None:
        shown = self.visible_views()
        if self.active_name not in shown:
            self.active_name = shown[0]
        for name, panel in self.panels.items():
            panel.setVisible(name in shown)
        for n in range(self.centralWidget().count()):
            row = self.centralWidget().widget(n)
            row.setVisible(any(name in shown for name in VIEW_NAMES[2 * n: 2 * n + 2]))
        if len(shown) == 4:
            QTimer.singleShot(0, lambda: self._align_rows(self.centralWidget().widget(0)))  # once laid out

    def _align_rows(self, moved: QSplitter) -> None:
        """Split the other row of views where ``moved`` is split, so the 2x2 columns line up."""
        rows = self.centralWidget()
        for n in range(rows.count()):
            row = rows.widget(n)
            if row is not moved and row.isVisible() and moved.isVisible() and row.sizes() != moved.sizes():
                row.blockSignals(True)
                row.setSizes(moved.sizes())
                row.blockSignals(False)

    def _fill_lower_views(self) -> None:
        """2x2: each lower view shows the series above it in its own plane (sagittal), once.

        Prior beside current: the T1 of each study, coronal, below its STIR.
        """
        if self.comparison.active:
            self.comparison.fill_lower_views()
            return
        for name, (above, plane) in LOWER_VIEWS.items():
            if self.session.views[name].status != "empty":
                continue
            volume_id = self.panels[above].series.currentData()
            if volume_id is None:
                continue
            self.session.set_plane(name, plane)
            self.show_volume(name, volume_id)

    def _set_light(self, on: bool) -> None:
        self.theme = "light" if on else "dark"
        apply_theme(self.theme)

    # -- keyboard ------------------------------------------------------------------------
    def active_view(self) -> SliceView:
        """The image view that navigation keys act on (the last one clicked or focused)."""
        return self.panels[self.active_name].view

    def _view_activated(self, name: str) -> None:
        self.active_name = name

    def focus_image(self) -> None:
        """Give the keyboard back to the active image view."""
        self.active_view().setFocus(Qt.OtherFocusReason)

    def _keep_keyboard(self) -> None:
        """When an edit disabled the control that had the keyboard (undo removed its lesion), the image gets it."""
        focus = QApplication.focusWidget()
        if self.isActiveWindow() and (focus is None or not focus.isEnabled() or not focus.isVisible()):
            self.focus_image()

    def _window_hidden(self, window: QObject) -> None:
        """A dialog or list of this window closed (help, a question, a region list): the keyboard comes back.

        Without a window manager (or with one that activates nothing) the window was left without a
        focused widget, or with the button that opened the dialog: the arrows did nothing on the image.
        """
        parent = window.parentWidget() if isinstance(window, QWidget) else None
        if window is not self and parent is not None and parent.window() is self and window.isWindow():
            QTimer.singleShot(0, lambda: self._after_dialog(window))

    def _after_dialog(self, dialog: QWidget) -> None:
        """The keyboard back to this window once ``dialog`` is closed (not when the reader only left it)."""
        if self._closed or (shiboken6.isValid(dialog) and dialog.isVisible()) or QApplication.activeModalWidget():
            return  # (a dialog of QMessageBox.question or QInputDialog.getText is deleted once closed)
        focus = QApplication.focusWidget()
        if focus is not None and (focus.window() is dialog or not focus.window().isVisible()):
            focus = None  # still in the closed dialog
        if focus is not None and focus.window() is not self:
            return  # another dialog or window has the keyboard now
        self.activateWindow()
        if focus is None or not is_text_entry(focus):
            self.focus_image()

    def _open_first_match(self) -> None:
        for row in range(self.study_list.count()):
            item = self.study_list.item(row)
            if not item.isHidden():
                self.study_list.setCurrentItem(item)
                self.focus_image()
                return

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802
        """Keys go to the active image view unless a text field (or a control the reader chose) takes them.

        - Navigation keys pressed anywhere in the window act on the active view.
        - A letter typed into a text field, a selector or a list never fires a one-key shortcut (M).
        - Ctrl+Z / Ctrl+Y undo the read unless the text field has typing of its own to undo.
        - Esc leaves mark mode and gives the keyboard back to the image.
        - A dialog or list of this window that closes gives the keyboard back (:meth:`_window_hidden`).
        """
        kind = event.type()
        if kind in ACTIVITY_EVENTS:
            self._open_due_read()  # the reader acts on the open read, never on none
            self.reading_timer.activity()
        elif kind == QEvent.Hide:
            self._window_hidden(watched)
        if kind not in (QEvent.ShortcutOverride, QEvent.KeyPress):
            return False
        focus = QApplication.focusWidget()
        if watched is not focus or focus is None or focus.window() is not self:
            return False
        if kind == QEvent.ShortcutOverride:
            return self._shortcut_override(focus, event)
        key = event.key()
        if key == Qt.Key_Escape:
            for panel in self.panels.values():
                panel.view.cancel_pending_click()
                panel.view.cancel_roi()
            self.lesion_panel.flush()
            self.mark_action.setChecked(False)
            self.ruler_action.setChecked(False)
            for action in self.roi_actions.values():
                action.setChecked(False)
            self.extent_action.setChecked(False)
            self.stop_cine()
            self.focus_image()
            return True
        view = self.active_view()
        if focus is view or owns_key(focus, event):
            return False
        plain = not (event.modifiers() & (Qt.ControlModifier | Qt.AltModifier | Qt.MetaModifier))
        if plain and key in view.navigation_keys():
            QApplication.sendEvent(view, QKeyEvent(QEvent.KeyPress, key, event.modifiers(), event.text()))
            return True
        return False

    def _shortcut_override(self, focus, event) -> bool:
        plain = not (event.modifiers() & (Qt.ControlModifier | Qt.AltModifier | Qt.MetaModifier))
        typing_site = isinstance(focus, SliceView) and focus.has_pending_click()  # after a mark click
        if plain and event.text() and event.text().isprintable() and (_types_ahead(focus) or typing_site):
            event.accept()  # the letter is typed, not a shortcut
            return True
        if isinstance(focus, QLineEdit):
            for sequences, available in ((self.undo_action.shortcuts(), focus.isUndoAvailable()),
                                         (self.redo_action.shortcuts(), focus.isRedoAvailable())):
                pressed = QKeySequence(event.keyCombination())
                if any(pressed.matches(s) == QKeySequence.ExactMatch for s in sequences) and not available:
                    event.ignore()  # nothing typed to undo here: the read's undo runs
                    return True
        return False

    def closeEvent(self, event) -> None:  # noqa: N802
        self.stop_cine()
        self._time_saver.stop()
        self.save_reading_time()
        self._closed = True
        QApplication.instance().removeEventFilter(self)
        QApplication.instance().applicationStateChanged.disconnect(self._application_state)
        QApplication.instance().commitDataRequest.disconnect(self._save_before_ending)
        QApplication.instance().aboutToQuit.disconnect(self._save_before_ending)
        self._termination.restore()
        for panel in self.panels.values():
            panel.view.cancel_pending_click()  # nothing is placed after the read is closed
        self.lesion_panel.flush()  # a comment still being typed is saved
        self.hide()  # off the screen at once: a composition still running can take seconds to end
        self.loader.abandon()  # and the process need not wait for it
        self.loader.wait(5000)
        self.comparison.wait(5000)
        if self.live is not None:
            self.live.close()
        if self.fetcher is not None:
            self.fetcher.wait(30000)
        if self.images is not self.store:
            self.images.close()
        self.store.close()
        super().closeEvent(event)
