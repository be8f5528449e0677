"""Prior beside current: the patient's earlier study next to the one being read, linked by registration.

The views show the prior study on the left (STIR; T1 below it in 2x2) and the
current one on the right. A click or scroll in one view puts the other on the
corresponding point through the registration, computed in the background
(the views work before it ends, linked by patient coordinates meanwhile).
The status bar names the region whose transform is in use; Alt+arrows and
Alt+PageUp/PageDown nudge it by 1 mm (kept with the studies). The prior read's
lesions are shown on the prior views and as ghosts on the current ones; the
"Prior lesions" dock records persisting / resolved / not assessable. The
logic lives in :mod:`cno_annotate.followup` and :class:`ViewerSession`.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QComboBox,
    QDockWidget,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from cno_annotate import followup
from cno_annotate import reading_study as rs
from cno_annotate.annotation.model import FollowupStatus
from cno_annotate.annotation.taxonomy import load_taxonomy
from cno_annotate.display.catalog import default_pair, series_choices
from cno_annotate.display.overlay import ghost_markers, lesion_label, prior_markers
from cno_annotate.display.session import CURRENT, PRIOR, UNREGISTERED, VIEW_NAMES, ViewChange
from cno_annotate.errors import CnoError

#: 1 mm nudges: Alt + arrow keys move along the current study's x (left-right) and z (head-feet), PageUp/Down y.
NUDGES = {"Alt+Left": (-1.0, 0.0, 0.0), "Alt+Right": (1.0, 0.0, 0.0), "Alt+Up": (0.0, 0.0, 1.0),
          "Alt+Down": (0.0, 0.0, -1.0), "Alt+PgUp": (0.0, -1.0, 0.0), "Alt+PgDown": (0.0, 1.0, 0.0)}
STATUS_TEXT = {None: "?", FollowupStatus.PERSISTING: "persisting", FollowupStatus.RESOLVED: "resolved",
               FollowupStatus.NOT_ASSESSABLE: "not assessable"}


class _Signals(QObject):
    done = Signal(int, object)
    failed = Signal(int, str)
    progress = Signal(int, int, int)


class _RegistrationJob(QRunnable):
    def __init__(self, store, prior: str, current: str, request: int, signals: _Signals, same_patient: bool):
        super().__init__()
        self.store, self.prior, self.current, self.request, self.signals = store, prior, current, request, signals
        self.same_patient = same_patient

    def run(self) -> None:
        try:
            transform = followup.registration_between(
                self.store, self.prior, self.current,
                progress=lambda done, total: self.signals.progress.emit(self.request, done, total),
                same_patient=self.same_patient)
        except CnoError as exc:
            self.signals.failed.emit(self.request, str(exc))
        except Exception as exc:  # the window must survive any failure
            self.signals.failed.emit(self.request, f"{type(exc).__name__}: {exc}")
        else:
            self.signals.done.emit(self.request, transform)


class Comparison(QObject):
    """The prior-beside-current controls of a :class:`MainWindow`."""

    registered = Signal()

    def __init__(self, window):
        super().__init__(window)
        self.w = window
        self.priors: list[followup.Prior] = []
        self.prior: followup.Prior | None = None
        self._awaiting: followup.Prior | None = None  # online: the prior being fetched from the study PACS
        self.carry: followup.CarryForward | None = None
        self.state = "off"  # off, registering, registered, unavailable, failed
        self._ghosts_shown = False
        self._request = 0
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(1)
        self._signals = _Signals()
        self._signals.done.connect(self._registered)
        self._signals.failed.connect(self._failed)
        self._signals.progress.connect(self._progress)
        self._build()
        window.session.changed.connect(self._session_changed)

    # -- building ----------------------------------------------------------------------------
    def _build(self) -> None:
        w = self.w
        bar = w.view_bar
        self.prior_box = QComboBox(w)
        self.prior_box.setFocusPolicy(Qt.NoFocus)
        self.prior_box.setSizeAdjustPolicy(QComboBox.AdjustToContents)
        self.prior_box.setMinimumContentsLength(24)
        self.prior_box.setToolTip("The earlier study to show beside this one")
        self.prior_box.activated.connect(self._prior_chosen)
        self.action = QAction("Prior beside current", w)
        self.action.setCheckable(True)
        self.action.setShortcut(QKeySequence("Ctrl+P"))
        self.action.setToolTip("Show the patient's earlier study beside this one, linked by registration (Ctrl+P)")
        self.action.toggled.connect(self._toggled)
        bar.addSeparator()
        bar.addAction(self.action)
        bar.addWidget(self.prior_box)
        for keys, delta in NUDGES.items():
            nudge = QAction(f"Nudge registration {keys}", w)
            nudge.setShortcut(QKeySequence(keys))
            nudge.triggered.connect(lambda _=False, d=delta: self.nudge(d))
            w.addAction(nudge)
        self.region_label = QLabel("", w)
        w.statusBar().addPermanentWidget(self.region_label)
        self.dock: QDockWidget | None = None  # built when a prior read is first carried forward
        self._dock_title = "Prior lesions"
        self._set_available(False)

    def _build_dock(self) -> QDockWidget:
        if self.dock is not None:
            return self.dock
        panel = QWidget(self.w)
        layout = QVBoxLayout(panel)
        layout.setContentsMargins(2, 2, 2, 2)
        self.ghost_list = QListWidget(panel)
        self.ghost_list.setFocusPolicy(Qt.NoFocus)
        self.ghost_list.currentItemChanged.connect(self._ghost_chosen)
        self.counts = QLabel("", panel)
        self.counts.setWordWrap(True)
        buttons = QHBoxLayout()
        self.outcome_buttons = {}
        for status, text in ((FollowupStatus.PERSISTING, "Persisting"), (FollowupStatus.RESOLVED, "Resolved"),
                             (FollowupStatus.NOT_ASSESSABLE, "Not assessable")):
            button = QPushButton(text, panel)
            button.setFocusPolicy(Qt.NoFocus)
            button.clicked.connect(lambda _=False, s=status: self.set_outcome(s))
            buttons.addWidget(button)
            self.outcome_buttons[status] = button
        layout.addWidget(self.ghost_list)
        layout.addLayout(buttons)
        layout.addWidget(self.counts)
        self.dock = QDockWidget("Prior lesions", self.w)
        self.dock.setObjectName("prior-lesions")
        self.dock.setWidget(panel)
        self.dock.setFeatures(QDockWidget.DockWidgetMovable | QDockWidget.DockWidgetFloatable)
        self.w.addDockWidget(Qt.RightDockWidgetArea, self.dock)
        self.dock.hide()
        return self.dock

    # -- which prior ---------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """Whether the prior is shown beside the current study."""
        return self.prior is not None

    def study_opened(self, study_uid: str) -> None:
        """A study was opened: offer its priors (what the design allows); keep comparing if asked."""
        w = self.w
        self._forget()
        try:
            if w.reading_study:
                self.priors = followup.reading_study_priors(w.store, w.reading_study, w.current_code or "")
            else:
                self.priors = followup.prior_studies(w.store, study_uid)
        except CnoError:
            self.priors = []
        self._name_controls()
        self.prior_box.clear()
        for prior in self.priors:
            self.prior_box.addItem(prior.label)
        self._set_available(bool(self.priors))
        if self.action.isChecked() and self.priors:
            self.show(self.priors[0])

    def _name_controls(self) -> None:
        """Neutral names in the hidden-order design (which visit is earlier is never shown)."""
        w = self.w
        hidden = bool(w.reading_study) and rs.get(w.store, w.reading_study).design == \
            rs.ReadingDesign.PAIRED_HIDDEN_ORDER
        if hidden:
            self.action.setText("Other visit beside this one")
            self.action.setToolTip("Show the patient's other visit beside this one, linked by registration (Ctrl+P)")
            self.prior_box.setToolTip("The other visit to show beside this one")
            self._dock_title = "Other visit's lesions"
        else:
            self.action.setText("Prior beside current")
            self.action.setToolTip("Show the patient's earlier study beside this one, linked by registration "
                                   "(Ctrl+P)")
            self.prior_box.setToolTip("The earlier study to show beside this one")
            self._dock_title = "Prior lesions"
        if self.dock is not None:
            self.dock.setWindowTitle(self._dock_title)

    def _set_available(self, available: bool) -> None:
        self.action.setEnabled(available)
        self.prior_box.setEnabled(available)
        if not available:
            self.action.blockSignals(True)
            self.action.setChecked(False)
            self.action.blockSignals(False)
        self.region_label.setText("")

    def _prior_chosen(self, index: int) -> None:
        """A prior chosen in the selector is shown beside the current study (switching comparison on)."""
        if self.active:
            self.show(self.priors[index])
        else:
            self.action.setChecked(True)  # shows the selector's prior

    def _toggled(self, on: bool) -> None:
        if on and self.priors:
            self.show(self.priors[max(0, self.prior_box.currentIndex())])
        elif not on and self.active:
            self._forget()
            if self.w._study_uid is not None:
                self.w.open_study(self.w._study_uid)

    def prior_fetched(self, code: str) -> bool:
        """Online: a case arrived from the study PACS; show it if it is the prior asked for (True then)."""
        prior = self._awaiting
        if prior is None or prior.reading_code != code:
            return False
        self._awaiting = None
        if self.action.isChecked():
            self.w.statusBar().clearMessage()
            self.show(prior)
        return True

    def prior_unavailable(self, code: str) -> None:
        """Online: the prior asked for could not be fetched (the window said why); the case stays alone."""
        if self._awaiting is None or self._awaiting.reading_code != code:
            return
        self._awaiting = None
        self.action.blockSignals(True)
        self.action.setChecked(False)
        self.action.blockSignals(False)

    def case_closed(self) -> None:
        """The case was closed (the next one is being fetched): no prior views, no ghosts, no prior awaited."""
        self._forget()

    def _forget(self) -> None:
        """Back to the current study alone (no prior views, no ghosts)."""
        self.prior, self.carry, self.state, self._awaiting = None, None, "off", None
        self._request += 1  # a registration still running is ignored
        for name in VIEW_NAMES:
            self.w.session.set_frame(name, CURRENT)
        self.w.session.set_transform(None)
        self.w.session.set_prior_markers([])
        if self._ghosts_shown:  # only the ghosts this controller drew (an adjudicator's markers stay)
            self.w.set_markers([])
            self._ghosts_shown = False
        for panel in self.w.panels.values():
            panel.set_tag("")
        if self.dock is not None:
            self.dock.hide()
        self.region_label.setText("")

    # -- showing ---------------------------------------------------------------------------------
    def show(self, prior: followup.Prior) -> None:
        """Prior STIR left, current STIR right (2x2: T1 of each below, coronal); register in the background."""
        w = self.w
        if not w.has_images_of(prior.study_uid):  # online: the prior is a case of the study PACS, fetched first
            self._awaiting = prior
            w.statusBar().showMessage(f"Fetching {prior.reading_code or 'the prior'} from the study PACS…")
            w.fetch_case(prior.reading_code)
            return
        self._awaiting = None
        self.prior = prior
        blinded = w.reading_study is not None
        prior_volumes = w.volumes_of(prior.study_uid)
        current_volumes = w.volumes_of(w._study_uid)
        prior_choices = series_choices(prior_volumes, blinded=blinded)
        w._labels.update(dict(prior_choices))
        current_tag, prior_tag = self._tags()
        prior_stir, prior_t1 = default_pair(prior_volumes)
        current_stir, current_t1 = default_pair(current_volumes)
        plan = {"left": (PRIOR, prior_stir, prior_choices, prior_tag),
                "right": (CURRENT, current_stir, None, current_tag),
                "lower-left": (PRIOR, prior_t1, prior_choices, prior_tag),
                "lower-right": (CURRENT, current_t1, None, current_tag)}
        for name, (frame, volume_id, choices, tag) in plan.items():
            w.session.set_frame(name, frame)
            panel = w.panels[name]
            panel.set_tag(tag)
            if choices is not None:
                panel.series.clear()
                for vid, label in choices:
                    panel.series.addItem(label, vid)
            if name.startswith("lower"):
                w.session.set_plane(name, "coronal")
                if w.layout_name != "2x2":
                    continue
            if volume_id is None:
                w.session.set_error(name, "this study has no series to show here")
            else:
                w.show_volume(name, volume_id)
        w.session.set_transform(None)
        self._start_registration(prior_stir, current_stir)
        self._carry_forward()
        self.action.blockSignals(True)
        self.action.setChecked(True)
        self.action.blockSignals(False)
        self.prior_box.setCurrentIndex(self.priors.index(prior) if prior in self.priors else 0)

    def fill_lower_views(self) -> None:
        """2x2 while comparing: the T1 of each study, coronal, below its STIR."""
        w = self.w
        for name, study in (("lower-left", self.prior.study_uid if self.prior else None), ("lower-right", w._study_uid)):
            if study is None or w.session.views[name].status != "empty":
                continue
            t1 = default_pair(w.volumes_of(study))[1]
            if t1 is not None:
                w.session.set_plane(name, "coronal")
                w.show_volume(name, t1)

    def _tags(self) -> tuple[str, str]:
        """What the panels say of their study: visit letters (hidden order), or current / prior."""
        w, prior = self.w, self.prior
        assert prior is not None
        if w.reading_study:
            study = rs.get(w.store, w.reading_study)
            if study.design == rs.ReadingDesign.PAIRED_HIDDEN_ORDER:
                letters = rs.visit_letters(w.store, w.reading_study, rs.case_details(
                    w.store, study, w.current_code)["patient_code"])
                return f"{w.current_code} (visit {letters[w.current_code]})", prior.label
            return f"{w.current_code} (being read)", prior.label
        return "Current (being read)", f"Prior: {prior.label}"

    # -- registration ----------------------------------------------------------------------------
    def _start_registration(self, prior_volume: str | None, current_volume: str | None) -> None:
        self._request += 1
        if prior_volume is None or current_volume is None:
            self.state = "failed"
            self._show_region("no STIR to register")
            return
        self.state = "registering"
        self._show_region("computing…")
        # a reading study offers only visits of the case's own patient code (its copies' patient IDs differ)
        self.pool.start(_RegistrationJob(self.w.images, prior_volume, current_volume, self._request, self._signals,
                                         same_patient=self.w.reading_study is not None))

    def wait(self, msecs: int = -1) -> bool:
        """Wait for a registration still running (tests, closing)."""
        return self.pool.waitForDone(msecs)

    def _progress(self, request: int, done: int, total: int) -> None:
        if request == self._request:
            self._show_region(f"computing {done}/{total} regions…")

    def _registered(self, request: int, transform) -> None:
        if request != self._request or not self.active:
            return
        if transform is None:
            self.state = "unavailable"
            self._show_region("not available (views linked by patient coordinates)")
        else:
            self.state = "registered"
            self.w.session.set_transform(transform)
        if self.carry is not None:
            self.carry.set_transform(transform)
            self._refresh_ghosts()
        self.registered.emit()

    def _failed(self, request: int, message: str) -> None:
        if request != self._request:
            return
        self.state = "failed"
        self._show_region("failed (views linked by patient coordinates)")
        self.w.report("Registration failed: the views are linked by patient coordinates", message)
        self.registered.emit()

    def nudge(self, delta) -> None:
        """Correct the region in use by ``delta`` mm and keep the correction with the studies."""
        if not self.active:
            return
        try:
            self.w.session.nudge(delta)
        except ValueError as exc:
            self.w.statusBar().showMessage(f"Cannot nudge: {exc}", 5000)
            return
        try:
            followup.save_transform(self.w.images, self.w.session.transform)
        except (OSError, CnoError) as exc:
            self.w.statusBar().showMessage(f"The correction is used but could not be kept: {exc}", 10000)
        if self.carry is not None:
            self.carry.set_transform(self.w.session.transform)
            self._refresh_ghosts()

    def _session_changed(self, name, what) -> None:
        if self.active and what in (ViewChange.POINT, ViewChange.TRANSFORM) and self.state == "registered":
            self._show_region(None)

    def _show_region(self, text: str | None) -> None:
        if text is None:
            session = self.w.session
            region = session.region
            nudge = ""
            if session.transform is not None and region != UNREGISTERED:
                offset = np.asarray(session.transform.region(region).nudge_mm, float)
                if np.any(offset != 0):
                    nudge = f", nudged {offset[0]:+.0f} {offset[1]:+.0f} {offset[2]:+.0f} mm"
            text = f"{region.replace('_', ' ')}{nudge}"
        self.region_label.setText(f"Registration: {text}")
        self.region_label.setToolTip("The body region whose transform links the views; Alt+arrows and "
                                     "Alt+PgUp/PgDown nudge it by 1 mm")

    # -- the prior read carried forward ------------------------------------------------------------
    def _carry_forward(self) -> None:
        w = self.w
        self.carry = None
        prior_read = followup.prior_read_of(w.store, self.prior.study_uid, w.reader, w.reading_study) \
            if self.prior else None
        if prior_read is not None:
            w.session.set_prior_markers(prior_markers(prior_read.lesions, load_taxonomy(prior_read.taxonomy)))
        allowed = w.reading_study is None or rs.get(w.store, w.reading_study).design == \
            rs.ReadingDesign.PAIRED_CHRONOLOGICAL
        if prior_read is None or not allowed or w.read_session is None:
            if self.dock is not None:
                self.dock.hide()
            return
        try:
            self.carry = followup.CarryForward(w.read_session, prior_read, w.session.transform)
        except CnoError as exc:
            w.statusBar().showMessage(f"The prior read is not carried forward: {exc}", 10000)
            if self.dock is not None:
                self.dock.hide()
            return
        w.read_session.changed.connect(lambda _label: self._refresh_ghosts())
        dock = self._build_dock()
        dock.setWindowTitle(self._dock_title)
        dock.show()
        self._refresh_ghosts()

    def _refresh_ghosts(self) -> None:
        if self.carry is None or self.carry.session is not self.w.read_session:
            return
        ghosts = self.carry.ghosts()
        taxonomy = load_taxonomy(self.carry.prior.taxonomy)
        chosen = self.selected_ghost()
        self.ghost_list.blockSignals(True)
        self.ghost_list.clear()
        for ghost in ghosts:  # named as its marker is: "prior L1 Distal femur R"
            item = QListWidgetItem(f"prior {lesion_label(ghost.prior, taxonomy)}: {STATUS_TEXT[ghost.status]}")
            item.setData(Qt.UserRole, ghost.tracking_uid)
            self.ghost_list.addItem(item)
            if ghost.tracking_uid == chosen:
                self.ghost_list.setCurrentItem(item)
        self.ghost_list.blockSignals(False)
        counts = self.carry.counts()
        self.counts.setText(f"persisting {counts['persisting']}, resolved {counts['resolved']}, not assessable "
                            f"{counts['not_assessable']}, unconfirmed {counts['unconfirmed']}; new {counts['new']}")
        self._ghosts_shown = True
        self.w.set_markers(ghost_markers(ghosts, taxonomy))

    def selected_ghost(self) -> str | None:
        """The tracking UID of the prior lesion chosen in the list."""
        item = self.ghost_list.currentItem()
        return item.data(Qt.UserRole) if item is not None else None

    def select_ghost(self, tracking_uid: str) -> None:
        """Choose a prior lesion (list or a click on its ghost) and go to it in every view."""
        for row in range(self.ghost_list.count()):
            if self.ghost_list.item(row).data(Qt.UserRole) == tracking_uid:
                self.ghost_list.setCurrentRow(row)
                return

    def _ghost_chosen(self, item, _previous=None) -> None:
        if item is None or self.carry is None:
            return
        ghost = next(g for g in self.carry.ghosts() if g.tracking_uid == item.data(Qt.UserRole))
        self.w.session.set_point("right", np.asarray(ghost.position, float))
        self.w.session.reveal(np.asarray(ghost.position, float))

    def set_outcome(self, status: FollowupStatus) -> None:
        """Record the chosen prior lesion's outcome (persisting: placed at its ghost on the current STIR)."""
        uid = self.selected_ghost()
        if self.carry is None or uid is None:
            self.w.statusBar().showMessage("Choose a prior lesion first", 5000)
            return
        view = self.w.session.views["right"]
        try:
            if status == FollowupStatus.PERSISTING:
                if not view.ready:
                    raise CnoError("the current study is still loading")
                lesion_id = self.carry.persisting(uid, view.volume.volume_id, view.volume.lps_to_index)
                self.w.lesion_panel.select(lesion_id)
                self.w.statusBar().showMessage(f"{lesion_id} persists: grade it anew (a digit per item)", 10000)
            elif status == FollowupStatus.RESOLVED:
                self.carry.resolved(uid)
            else:
                self.carry.not_assessable(uid)
        except CnoError as exc:
            self.w.statusBar().showMessage(str(exc), 10000)
            return
        self._refresh_ghosts()
        if status == FollowupStatus.PERSISTING:
            self.w.lesion_panel.focus_first_grade()  # graded anew; after the last grade the image has the keys
        else:
            self.w.focus_image()
