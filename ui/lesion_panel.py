"""The lesion panel: the read's lesions, their site and grades, live totals, unit marks.

Every control calls the core :class:`~cno_annotate.annotation.reads.ReadSession`;
the panel redraws itself from the session after every change (its own
edits, undo, redo), so it never holds state the core does not.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from cno_annotate.annotation.model import ReadStatus
from cno_annotate.annotation.reads import ReadSession
from cno_annotate.annotation.scheme import NOT_ASSESSABLE, Item
from cno_annotate.annotation.scoring import NO_LESION, UNIT_NOT_ASSESSABLE
from cno_annotate.errors import CnoError, ReadConflict, ReadLocked
from cno_annotate.wording import counted

NO_SIDE = "—"
# The border makes the style sheet paint the checked button itself: with a background alone, Fusion
# lightened it to about #4a90d9, white on it 3.4:1. White on #1f6fd1 is 5:1, on #0a3f80 (submitted) 10:1.
CHECKED_STYLE = ("QToolButton { min-width: 22px; } "
                 "QToolButton:checked { background: #1f6fd1; color: white; font-weight: bold; "
                 "border: 1px solid #0a3f80; border-radius: 3px; } "
                 "QToolButton:checked:disabled { background: #0a3f80; color: white; }")


class GradeSelector(QWidget):
    """One scheme item: a button per grade plus "NA"; digits, N and Delete from the keyboard."""

    graded = Signal(str, object)  # item id, value (int, "NA" or None)
    advance = Signal(str)  # item id: a grade was typed, move to the next item
    done = Signal()  # Enter: grading finished, back to the image

    def __init__(self, item: Item, parent=None):
        super().__init__(parent)
        self.item = item
        self.setFocusPolicy(Qt.StrongFocus)
        self.setToolTip(f"{item.definition}\nKeys: {', '.join(str(v) for v in item.values)} (then the next item), "
                        "N = not assessable, Delete = clear; Enter = back to the image")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(2, 1, 2, 1)
        layout.setSpacing(2)
        self.buttons = QButtonGroup(self)
        self.buttons.setExclusive(False)
        for grade in item.grades:
            self._add_button(str(grade["value"]), grade["value"], f"{grade['label']}: {grade['definition']}")
        self._add_button("NA", NOT_ASSESSABLE, "Not assessable (outside the field of view, artefact)")
        layout.addStretch(1)
        self.buttons.buttonClicked.connect(self._clicked)

    def _add_button(self, text: str, value, tip: str) -> None:
        button = QToolButton(self)
        button.setText(text)
        button.setCheckable(True)
        button.setFocusPolicy(Qt.NoFocus)
        button.setToolTip(tip)
        button.setProperty("grade", value)
        button.setStyleSheet(CHECKED_STYLE)
        self.buttons.addButton(button)
        self.layout().addWidget(button)

    def set_value(self, value) -> None:
        """Show a grade (None: none chosen)."""
        for button in self.buttons.buttons():
            button.setChecked(value is not None and button.property("grade") == value)

    def _clicked(self, button) -> None:
        value = button.property("grade")
        self.graded.emit(self.item.id, None if not button.isChecked() else value)

    def takes(self, event) -> bool:
        """Whether a key is this row's (a grade digit, N, Delete, Backspace, Enter, Tab)."""
        text = event.text().strip().upper()
        return ((text.isdigit() and int(text) in self.item.values) or text == "N"
                or event.key() in (Qt.Key_Delete, Qt.Key_Backspace, Qt.Key_Return, Qt.Key_Enter, Qt.Key_Tab,
                                   Qt.Key_Backtab))

    def keyPressEvent(self, event) -> None:  # noqa: N802
        text = event.text().strip().upper()
        if text.isdigit() and int(text) in self.item.values:
            self.graded.emit(self.item.id, int(text))
            self.advance.emit(self.item.id)
        elif text == "N":
            self.graded.emit(self.item.id, NOT_ASSESSABLE)
            self.advance.emit(self.item.id)
        elif event.key() in (Qt.Key_Delete, Qt.Key_Backspace):
            self.graded.emit(self.item.id, None)
        elif event.key() in (Qt.Key_Return, Qt.Key_Enter):
            self.done.emit()
        else:
            super().keyPressEvent(event)

    def focusInEvent(self, event) -> None:  # noqa: N802
        self.setStyleSheet("GradeSelector { background: palette(highlight); }")
        super().focusInEvent(event)

    def focusOutEvent(self, event) -> None:  # noqa: N802
        self.setStyleSheet("")
        super().focusOutEvent(event)


class SideBox(QComboBox):
    """The side selector: R or L sets the side and Enter keeps it, each moving on (``typed``)."""

    typed = Signal(object)  # "R", "L", or None (Enter: keep the side shown)

    def keyPressEvent(self, event) -> None:  # noqa: N802
        text = event.text().strip().upper()
        if text in ("R", "L"):
            self.typed.emit(text)
        elif event.key() in (Qt.Key_Return, Qt.Key_Enter):
            self.typed.emit(None)
        else:
            super().keyPressEvent(event)


class SubsiteBox(QComboBox):
    """The sub-site selector: a letter chooses a sub-site; Enter keeps it and a grade digit grades the first
    item, each moving on to the grades (``onward``), as the side selector does."""

    onward = Signal(object)  # None (Enter), or the key event of a digit for the first grade

    def takes(self, event) -> bool:
        """Whether a key is this selector's (letters and arrows choose, Enter and digits move on)."""
        return (event.text().strip().isdigit() or event.text().isalpha()
                or event.key() in (Qt.Key_Up, Qt.Key_Down, Qt.Key_Return, Qt.Key_Enter))

    def keyPressEvent(self, event) -> None:  # noqa: N802
        if event.text().strip().isdigit():
            self.onward.emit(event)
        elif event.key() in (Qt.Key_Return, Qt.Key_Enter):
            self.onward.emit(None)
        else:
            super().keyPressEvent(event)


class SitePicker(QWidget):
    """A search box over the taxonomy: typing "dist fem" lists Distal femur."""

    picked = Signal(str)  # site id

    def __init__(self, parent=None):
        super().__init__(parent)
        self.session: ReadSession | None = None
        self.search = QLineEdit(self)
        self.search.setPlaceholderText("Site: type e.g. dist fem, T8, SI joint")
        self.search.setClearButtonEnabled(True)
        self.results = QListWidget(self)
        self.results.setMaximumHeight(110)
        self.results.setWordWrap(True)  # a long name or the proposal's hint wraps: never cut, no sideways scrolling
        self.results.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.results.setTextElideMode(Qt.ElideNone)
        self.results.hide()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(1)
        layout.addWidget(self.search)
        layout.addWidget(self.results)
        self.search.textEdited.connect(self._update)
        self.search.returnPressed.connect(self._pick_first)
        self.results.itemActivated.connect(self._pick)
        self.results.itemClicked.connect(self._pick)

    def _update(self, text: str) -> None:
        self.results.clear()
        if self.session is None or not text.strip():
            self.results.hide()
            return
        for site in self.session.taxonomy.search(text, limit=12):
            item = QListWidgetItem(site.label)
            item.setData(Qt.UserRole, site.id)
            self.results.addItem(item)
        self.results.setVisible(self.results.count() > 0)
        if self.results.count():
            self.results.setCurrentRow(0)

    def _pick_first(self) -> None:
        item = self.results.currentItem() or (self.results.item(0) if self.results.count() else None)
        if item is not None:
            self._pick(item)

    def _pick(self, item: QListWidgetItem) -> None:
        self.results.hide()
        self.picked.emit(item.data(Qt.UserRole))

    def propose(self, site_id: str) -> None:
        """Offer a site (from where the lesion lies): its name selected in the box, Enter takes it, typing replaces it."""
        if self.session is None or site_id not in self.session.taxonomy.sites:
            return
        site = self.session.taxonomy.sites[site_id]
        self.search.setText(site.label)
        self.search.selectAll()
        self.results.clear()
        item = QListWidgetItem(f"{site.label}: proposed from the position, Enter takes it")
        item.setData(Qt.UserRole, site.id)
        self.results.addItem(item)
        self.results.setCurrentRow(0)
        self.results.show()

    def show_site(self, label: str) -> None:
        """Show the chosen site's name in the box."""
        self.search.setText(label)
        self.results.hide()


class LesionList(QListWidget):
    """The read's lesions, one row each; ``row_clicked`` when the mouse is released over a row.

    (``itemClicked`` is not enough: selecting a lesion redraws the list, so the row pressed is
    another item than the row released.)
    """

    row_clicked = Signal()

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802
        super().mouseReleaseEvent(event)
        if event.button() == Qt.LeftButton and self.itemAt(event.position().toPoint()) is not None:
            self.row_clicked.emit()


class LesionPanel(QWidget):
    """The read: lesions, the selected lesion's editor, totals and unit marks."""

    lesion_selected = Signal(str)  # lesion id ("" for none)
    finished = Signal()  # the keyboard path of a lesion ended (last grade, Enter): back to the image
    message = Signal(str)
    session_replaced = Signal(object)  # a new ReadSession (a new version of a submitted read)
    about_to_submit = Signal()  # the reader confirmed Submit: the read is about to be locked

    def __init__(self, parent=None):
        super().__init__(parent)
        self.session: ReadSession | None = None
        self.selected: str | None = None
        self._grade_widgets: dict[str, GradeSelector] = {}
        self._unit_grade_widgets: dict[str, tuple[QLabel, GradeSelector]] = {}
        self._grade_key = None
        self._comment_for: str | None = None  # the lesion the comment box belongs to
        self.header = QLabel("No read open", self)
        self.header.setTextFormat(Qt.PlainText)  # reader ids are user text, never markup
        self.header.setWordWrap(True)
        self.totals = QLabel("", self)
        self.totals.setWordWrap(True)
        self.totals.setObjectName("totals")
        self.lesions = LesionList(self)
        self.lesions.setToolTip("Lesions of this read with their score; select one to go to it")
        self.lesions.setWordWrap(True)  # a long site and sub-site wrap: the score at the end is never cut off
        self.lesions.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.lesions.setTextElideMode(Qt.ElideNone)
        self.lesions.currentItemChanged.connect(self._lesion_clicked)
        self.lesions.row_clicked.connect(self._to_lesion_editor)
        self._build_editor()
        self._build_units()
        self.submit_button = QPushButton("Submit read…", self)
        self.submit_button.setToolTip("Submit and lock the read")
        self.submit_button.clicked.connect(self._submit)
        self.version_button = QPushButton("New version…", self)
        self.version_button.setToolTip("Change a submitted read: a new draft version, with a reason; the "
                                       "submitted read is kept as it was")
        self.version_button.clicked.connect(self._new_version)
        content = QWidget(self)
        layout = QVBoxLayout(content)
        layout.setContentsMargins(4, 4, 4, 4)
        self.lesions.setMinimumHeight(80)
        layout.addWidget(self.lesions, 1)
        layout.addWidget(self.editor)
        layout.addWidget(self.units_box)
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setWidget(content)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.scroll = scroll
        # The read's status and totals stay on top, Submit at the bottom, whatever the screen's height.
        outer = QVBoxLayout(self)
        outer.setContentsMargins(4, 4, 4, 4)
        outer.addWidget(self.header)
        outer.addWidget(self.totals)
        outer.addWidget(scroll, 1)
        outer.addWidget(self.submit_button)
        outer.addWidget(self.version_button)
        self.setMinimumWidth(320)
        self.refresh()

    # -- building --------------------------------------------------------------------
    def _build_editor(self) -> None:
        self.editor = QGroupBox("Selected lesion", self)
        form = QFormLayout(self.editor)
        form.setContentsMargins(4, 4, 4, 4)
        self.site_picker = SitePicker(self.editor)
        self.site_picker.picked.connect(lambda site_id: self._edit(site_id=site_id))
        self.side = SideBox(self.editor)
        self.side.typed.connect(self._side_typed)
        self.side.addItems([NO_SIDE, "R", "L"])
        self.side.setToolTip("Side, proposed from where the lesion was placed (R / L, Enter keeps it)")
        self.side.activated.connect(lambda i: self._edit(side=None if i == 0 else self.side.itemText(i)))
        self.subsite = SubsiteBox(self.editor)
        self.subsite.onward.connect(self._subsite_onward)
        self.subsite.activated.connect(lambda i: self._edit(subsite=self.subsite.itemData(i)))
        self.grades_box = QWidget(self.editor)
        self.grades_layout = QFormLayout(self.grades_box)
        self.grades_layout.setContentsMargins(0, 0, 0, 0)
        self.comment = QLineEdit(self.editor)
        self.comment.setPlaceholderText("Comment")
        self.comment.editingFinished.connect(self._comment_done)
        self.confidence = QComboBox(self.editor)
        self.confidence.addItems(["—", "1 (low)", "2", "3", "4", "5 (high)"])
        self.confidence.activated.connect(lambda i: self._edit(confidence=None if i == 0 else i))
        self.size_label = QLabel("", self.editor)
        self.delete_button = QPushButton("Delete lesion", self.editor)
        self.delete_button.setToolTip("Delete the selected lesion (Ctrl+Z brings it back)")
        self.delete_button.clicked.connect(self.delete_selected)
        form.addRow("Site", self.site_picker)
        form.addRow("Side", self.side)
        form.addRow("Sub-site", self.subsite)
        form.addRow(self.grades_box)
        form.addRow("Comment", self.comment)
        form.addRow("Confidence", self.confidence)
        form.addRow("Size", self.size_label)
        form.addRow(self.delete_button)

    def _build_units(self) -> None:
        self.units_box = QGroupBox("Bone units without a lesion", self)
        layout = QVBoxLayout(self.units_box)
        layout.setContentsMargins(4, 4, 4, 4)
        row = QHBoxLayout()
        self.unit_picker = SitePicker(self.units_box)
        self.unit_picker.search.setPlaceholderText("Unit: type a site")
        self.unit_side = QComboBox(self.units_box)
        self.unit_side.addItems([NO_SIDE, "R", "L"])
        row.addWidget(self.unit_picker, 1)
        row.addWidget(self.unit_side)
        buttons = QHBoxLayout()
        for text, mark in (("No lesion", NO_LESION), ("Not assessable", UNIT_NOT_ASSESSABLE), ("Clear", None)):
            button = QPushButton(text, self.units_box)
            button.clicked.connect(lambda _=False, m=mark: self._mark_unit(m))
            buttons.addWidget(button)
        self.unit_marks = QListWidget(self.units_box)
        self.unit_marks.setMaximumHeight(90)
        self._unit_site: str | None = None
        self.unit_picker.picked.connect(self._unit_site_picked)
        layout.addLayout(row)
        layout.addLayout(buttons)
        layout.addWidget(self.unit_marks)

    # -- model -> widgets ------------------------------------------------------------------
    def set_session(self, session: ReadSession | None) -> None:
        """Show a read (None: no read); a comment being typed is saved first."""
        self.flush()
        if self.session is not None:
            self.session.changed.disconnect(self._on_changed)
        self.session = session
        self.selected = None
        self._grade_key = None
        self.site_picker.session = self.unit_picker.session = session
        if session is not None:
            session.changed.connect(self._on_changed)
        self.refresh()

    def _on_changed(self, _change) -> None:
        self.refresh()

    def refresh(self) -> None:
        """Redraw everything from the session."""
        session = self.session
        enabled = session is not None and session.editable
        for widget in (self.editor, self.units_box, self.submit_button):
            widget.setEnabled(enabled)
        self.version_button.setVisible(session is not None and session.read.status == ReadStatus.SUBMITTED
                                       and not session.store.read_only)
        if session is None:
            self.header.setText("No read open")
            self.totals.setText("")
            self.lesions.clear()
            self.editor.setEnabled(False)
            return
        read = session.read
        version = f" · version {read.version}" if read.version > 1 else ""
        read_only = " · read-only (the store cannot be written)" if session.store.read_only else ""
        status = read.status if session.stored else "not started (saved from your first change)"
        self.header.setText(f"{read.role.capitalize()} {read.reader} · {status}{version}{read_only} · "
                            f"{session.scheme.title} ({session.scheme.id} {session.scheme.version})")
        scores = session.scores()
        regions = ", ".join(f"{session.taxonomy.regions[r]} {v}" for r, v in sorted(scores.regions.items()) if v)
        self.totals.setText(f"<b>Total {scores.total}</b> · {counted(scores.units_with_lesion, 'unit')} with lesions · "
                            f"{scores.units_not_assessable} not assessable<br>{regions}")
        self.lesions.blockSignals(True)
        self.lesions.clear()
        for lesion in read.lesions:
            item = QListWidgetItem(self._lesion_text(lesion, scores.lesions.get(lesion.lesion_id)))
            item.setData(Qt.UserRole, lesion.lesion_id)
            self.lesions.addItem(item)
            if lesion.lesion_id == self.selected:
                self.lesions.setCurrentItem(item)
        self.lesions.blockSignals(False)
        if self.selected not in {l.lesion_id for l in read.lesions}:
            self.selected = None
        self._refresh_editor()
        self.unit_marks.clear()
        for unit_id, mark in sorted(read.unit_marks.items()):
            self.unit_marks.addItem(f"{session.taxonomy.unit_label(unit_id)}: "
                                    f"{'no lesion' if mark == NO_LESION else 'not assessable'}")

    def _lesion_text(self, lesion, score) -> str:
        if lesion.site_id is None:
            return f"{lesion.lesion_id}  (no site yet)"
        site = self.session.taxonomy.site(lesion.site_id)
        parts = [lesion.lesion_id, site.label]
        if lesion.side:
            parts.append(lesion.side)
        if lesion.subsite:
            parts.append(f"· {self.session.taxonomy.subsites[lesion.subsite]['label'].lower()}")
        return "  ".join(parts) + f"  — score {score if score is not None else '–'}"

    def _refresh_editor(self) -> None:
        lesion = self.current_lesion()
        self.editor.setEnabled(lesion is not None and self.session.editable)
        self.editor.setTitle(f"Lesion {lesion.lesion_id}" if lesion else "Selected lesion")
        site = self.session.taxonomy.site(lesion.site_id) if lesion and lesion.site_id else None
        self.site_picker.show_site(site.label if site else "")
        self.side.setCurrentIndex({"R": 1, "L": 2}.get(lesion.side if lesion else None, 0))
        self.side.setEnabled(bool(site is None or site.lateral))
        self.subsite.clear()
        self.subsite.addItem(NO_SIDE, None)
        for sub in (site.subsites if site else ()):
            self.subsite.addItem(self.session.taxonomy.subsites[sub]["label"], sub)
        self.subsite.setCurrentIndex(max(0, self.subsite.findData(lesion.subsite if lesion else None)))
        self._rebuild_grades(site.unit_type if site else None)
        for item_id, widget in self._grade_widgets.items():
            widget.set_value(lesion.grades.get(item_id) if lesion else None)
        unit = self._lesion_unit(lesion)
        for item_id, (label, selector) in self._unit_grade_widgets.items():
            value, confirmed = self.session.unit_grade(unit, item_id) if unit else (None, False)
            selector.set_value(value)
            item_label = self.session.scheme.item(item_id).label
            label.setText(f"Unit: {item_label}" + ("" if value is None else " (yours)" if confirmed else " (proposed)"))

        QTimer.singleShot(0, self._fit_grades)
        if not self.comment.hasFocus() or self._comment_for != (lesion.lesion_id if lesion else None):
            self.comment.setText(lesion.comment if lesion else "")
            self._comment_for = lesion.lesion_id if lesion else None
        self.confidence.setCurrentIndex(lesion.confidence or 0 if lesion else 0)
        if lesion and lesion.sizes_mm:
            sizes = " x ".join(f"{s:.0f}" for s in lesion.sizes_mm)
            self.size_label.setText(f"{sizes} mm, {lesion.volume_ml:.2f} ml")
        else:
            self.size_label.setText("point (drag to draw an extent)")

    def _fit_grades(self) -> None:
        """Give the grade rows the height their wrapped labels need at the panel's width (none is cut)."""
        for label in self.grades_box.findChildren(QLabel):  # the form layout underestimates wrapped labels
            if label.wordWrap() and label.width() > 0:
                label.setMinimumHeight(label.heightForWidth(label.width()))

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        QTimer.singleShot(0, self._fit_grades)

    def _rebuild_grades(self, unit_type: str | None) -> None:
        key = (self.session.scheme.id, unit_type)
        if key == self._grade_key:
            return
        self._grade_key = key
        while self.grades_layout.rowCount():
            self.grades_layout.removeRow(0)
        self._grade_widgets = {}
        self._unit_grade_widgets = {}
        items = self.session.scheme.items_for(unit_type) if unit_type else self.session.scheme.items
        previous = self.comment
        for item in items:
            selector = GradeSelector(item, self.grades_box)
            selector.graded.connect(self._grade)
            selector.advance.connect(self._next_grade)
            selector.done.connect(self.finished)
            label = QLabel(item.label, self.grades_box)
            label.setToolTip(item.definition)
            label.setWordWrap(True)
            self.grades_layout.addRow(label, selector)
            label.setVisible(self.grades_box.isVisible())  # now, so the keyboard can go to it at once
            selector.setVisible(self.grades_box.isVisible())
            self._grade_widgets[item.id] = selector
        for item in items if unit_type else ():
            if item.per_unit:  # graded for the whole bone unit: proposed from its lesions, confirmed here
                unit_selector = GradeSelector(item, self.grades_box)
                unit_selector.graded.connect(self._unit_grade)
                unit_label = QLabel(f"Unit: {item.label}", self.grades_box)
                unit_label.setWordWrap(True)
                unit_label.setToolTip("Graded for the whole bone unit, all its lesions together: proposed from the "
                                      "lesions' grades until you choose one (Delete goes back to the proposal)")
                self.grades_layout.addRow(unit_label)  # the whole width: its state never squeezes it
                self.grades_layout.addRow("", unit_selector)
                unit_label.setVisible(self.grades_box.isVisible())
                unit_selector.setVisible(self.grades_box.isVisible())
                self._unit_grade_widgets[item.id] = (unit_label, unit_selector)
        chain = [self.subsite, *self._grade_widgets.values(), previous]
        for first, second in zip(chain, chain[1:]):
            QWidget.setTabOrder(first, second)

    # -- widgets -> model -----------------------------------------------------------------
    def current_lesion(self):
        """The selected lesion, or None."""
        if self.session is None or self.selected is None:
            return None
        try:
            return self.session.read.lesion(self.selected)
        except KeyError:
            return None

    def select(self, lesion_id: str | None, focus_site: bool = False) -> None:
        """Select a lesion (and put the keyboard in its site box)."""
        self.flush()
        self.selected = lesion_id
        self.refresh()
        self.lesion_selected.emit(lesion_id or "")
        if focus_site and lesion_id:
            self.site_picker.search.setFocus()
            self.site_picker.search.selectAll()

    def propose_site(self, site_id: str) -> None:
        """Offer a site for the selected lesion while its site box has the keyboard (Enter accepts)."""
        lesion = self.current_lesion()
        if lesion is not None and lesion.site_id is None:
            self.site_picker.propose(site_id)

    def focus_first_grade(self) -> None:
        """Put the keyboard on the first grade of the selected lesion."""
        if self._grade_widgets:
            next(iter(self._grade_widgets.values())).setFocus(Qt.TabFocusReason)

    def _lesion_clicked(self, item, _previous=None) -> None:
        if item is None:
            return
        lesion_id = item.data(Qt.UserRole)  # before saving a comment redraws the list (and deletes item)
        self.flush()
        self.selected = lesion_id
        self.refresh()
        self.lesion_selected.emit(lesion_id)

    def _to_lesion_editor(self) -> None:
        """After a lesion's row was clicked: the keyboard on its first grade (its site box while it has no site).

        Digits then grade it and move on, as on the keyboard path after placing a lesion; the list keeps
        no keys (a digit there set the image's window preset instead).
        """
        lesion = self.current_lesion()
        if lesion is None or not self.editor.isEnabled():
            return
        if lesion.site_id is None:
            self.site_picker.search.setFocus(Qt.MouseFocusReason)
            self.site_picker.search.selectAll()
        else:
            self.focus_first_grade()

    def _edit(self, **fields) -> None:
        if self.current_lesion() is None:
            return
        self._run(lambda: self.session.update_lesion(self.selected, **fields))
        if "site_id" in fields:
            lesion = self.current_lesion()
            site = self.session.taxonomy.site(lesion.site_id) if lesion and lesion.site_id else None
            if site is not None and site.lateral:
                self.side.setFocus(Qt.TabFocusReason)  # next on the keyboard path: the side (proposed)
            else:
                self.focus_first_grade()

    def _next_grade(self, item_id: str) -> None:
        """After a typed grade: the next item, or back to the image after the last one."""
        ids = list(self._grade_widgets)
        position = ids.index(item_id) if item_id in ids else len(ids)
        if position + 1 < len(ids):
            self._grade_widgets[ids[position + 1]].setFocus(Qt.TabFocusReason)
        else:
            self.finished.emit()

    def _side_typed(self, side: str | None) -> None:
        """The side selector on the keyboard path: R or L sets the side, Enter keeps it; then the grades."""
        if side is not None and self.side.isEnabled():
            self._edit(side=side)
        self.focus_first_grade()

    def _subsite_onward(self, event) -> None:
        """Enter or a grade digit on the sub-site: on to the first grade (the digit grades it)."""
        self.focus_first_grade()
        first = next(iter(self._grade_widgets.values()), None)
        if event is not None and first is not None and first.takes(event):
            first.keyPressEvent(event)

    def _lesion_unit(self, lesion) -> str | None:
        if lesion is None or not lesion.site_id:
            return None
        site = self.session.taxonomy.site(lesion.site_id)
        return None if site.lateral and lesion.side is None else self.session.taxonomy.unit_id(site.id, lesion.side)

    def _unit_grade(self, item_id: str, value) -> None:
        unit = self._lesion_unit(self.current_lesion())
        if unit is not None:
            self._run(lambda: self.session.set_unit_grade(unit, item_id, value))

    def _grade(self, item_id: str, value) -> None:
        if self.current_lesion() is not None:
            self._run(lambda: self.session.set_grade(self.selected, item_id, value))

    def _comment_done(self) -> None:
        self.flush()
        if self.comment.hasFocus():  # Enter (not a click elsewhere): back to the image
            self.finished.emit()

    def flush(self) -> None:
        """Save a comment being typed to the lesion it was typed for (before any switch or close)."""
        if self.session is None or self._comment_for is None or not self.session.editable:
            return
        try:
            lesion = self.session.read.lesion(self._comment_for)
        except KeyError:
            return
        if self.comment.text() != lesion.comment:
            self._run(lambda: self.session.update_lesion(lesion.lesion_id, comment=self.comment.text()))

    def delete_selected(self) -> None:
        """Delete the selected lesion at once: Ctrl+Z brings it back, so no dialog asks first."""
        lesion = self.current_lesion()
        if lesion is None or not self.delete_button.isEnabled():  # none, or a read that cannot change
            return
        self._run(lambda: self.session.delete_lesion(lesion.lesion_id))
        self.message.emit(f"Lesion {lesion.lesion_id} deleted (Ctrl+Z brings it back)")

    def _unit_site_picked(self, site_id: str) -> None:
        self._unit_site = site_id
        site = self.session.taxonomy.site(site_id)
        self.unit_picker.show_site(site.label)
        self.unit_side.setEnabled(site.lateral)

    def _mark_unit(self, mark) -> None:
        if self.session is None or self._unit_site is None:
            self.message.emit("Choose a site for the unit first")
            return
        side = self.unit_side.currentText()

        def do() -> None:
            unit = self.session.taxonomy.unit_id(self._unit_site, None if side == NO_SIDE else side)
            self.session.mark_unit(unit, mark)

        self._run(do)

    def _submit(self) -> None:
        if self.session is None:
            return
        box = QMessageBox(QMessageBox.Question, "Submit read", "Submit this read? It is locked afterwards.",
                          QMessageBox.Yes | QMessageBox.No, self)
        remaining = len(self.session.remaining_units())
        if remaining:  # a reader who forgot the checklist hears it before the read is locked
            box.setInformativeText(f"{counted(remaining, 'bone unit')} {'is' if remaining == 1 else 'are'} not "
                                   f"reviewed (no lesion and no mark): "
                                   f"\"Rest: no lesion\" (Ctrl+Shift+N) marks them.")
        box.setDefaultButton(QMessageBox.Yes)
        if box.exec() == QMessageBox.Yes:
            self.about_to_submit.emit()
            self._run(self.session.submit)
            if self.session.read.status == ReadStatus.SUBMITTED:
                self.message.emit("Read submitted: it is locked (New version… changes it, with a reason)")

    def _new_version(self) -> None:
        if self.session is None:
            return
        reason, ok = QInputDialog.getText(self, "New version", "Why must the submitted read change?")
        if ok:
            self.new_version(reason)

    def new_version(self, reason: str) -> None:
        """Open a new draft version of the submitted read (the old one is kept)."""
        try:
            session = ReadSession.new_version(self.session.store, self.session.read.read_id,
                                              self.session.actor, reason)
        except CnoError as exc:
            self.message.emit(str(exc))
            return
        self.session_replaced.emit(session)

    def _run(self, action) -> None:
        """Run an edit; show a refusal from the core as a message, not a crash.

        A read changed or submitted in another window or program: the session
        has reloaded it, so the panel shows what the store holds now.
        """
        try:
            action()
        except (ReadConflict, ReadLocked) as exc:
            self.message.emit(str(exc))
            if self.selected is not None and self.selected not in {l.lesion_id for l in self.session.read.lesions}:
                self.selected = None
            self.refresh()
        except CnoError as exc:
            self.message.emit(str(exc))
            self.refresh()
