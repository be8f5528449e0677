"""Query/retrieve dialog and "Send SR to PACS": thin widgets over :mod:`cno_annotate.pacs`.

Every network call runs in a worker thread (QThreadPool); the worker opens its own store
connection (SQLite connections stay in their thread) and reports through Qt signals, which
arrive in the GUI thread. Cancel sets a :class:`threading.Event` the retrieve checks between
instances; what arrived is imported and kept.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from cno_annotate.errors import CnoError
from cno_annotate.pacs import config
from cno_annotate.pacs.client import open_client
from cno_annotate.pacs.query import StudyMatch, StudyQuery, parse_date_range
from cno_annotate.pacs.retrieve import retrieve_study, series_line
from cno_annotate.store import Store
from cno_annotate.wording import counted

COLUMNS = ("Date", "Patient ID", "Name", "Accession", "Modalities", "Series", "Instances", "Description")


class _Signals(QObject):
    found = Signal(object)  # list[StudyMatch]
    progress = Signal(int, int)  # received, expected
    series_done = Signal(str)  # description of the series imported
    finished = Signal(object)  # RetrieveReport or the SR's SOP UID
    failed = Signal(str)


class _Job(QRunnable):
    """Run ``work(signals)`` in the pool; a CnoError (or any failure) becomes ``failed``."""

    def __init__(self, work: Callable[[_Signals], object], signals: _Signals):
        super().__init__()
        self.work, self.signals = work, signals

    def run(self) -> None:
        try:
            result = self.work(self.signals)
        except CnoError as exc:
            self.signals.failed.emit(str(exc))
        except Exception as exc:  # the window must survive any failure
            self.signals.failed.emit(f"{type(exc).__name__}: {exc}")
        else:
            self.signals.finished.emit(result) if not isinstance(result, list) else self.signals.found.emit(result)


class PacsDialog(QDialog):
    """Search a registered PACS, pick a study, retrieve it into the store (progress, cancel)."""

    study_retrieved = Signal(str)  # study UID, after a retrieve that imported something

    def __init__(self, store_root: Path, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Query / retrieve from PACS")
        self.store_root = Path(store_root)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(1)
        self.cancel_event = threading.Event()
        self.matches: list[StudyMatch] = []
        self.busy = False
        self.node = QComboBox(self)
        nodes = _nodes_or_message()
        self.node.addItems(sorted(nodes) if isinstance(nodes, dict) else [])
        self.patient_id = QLineEdit(self)
        self.patient_name = QLineEdit(self)
        self.patient_name.setPlaceholderText("* as wildcard")
        self.dates = QLineEdit(self)
        self.dates.setPlaceholderText("YYYYMMDD-YYYYMMDD (either end may be left out)")
        self.accession = QLineEdit(self)
        self.modality = QLineEdit("MR", self)
        form = QFormLayout()
        for label, widget in (("PACS", self.node), ("Patient ID", self.patient_id), ("Patient name", self.patient_name),
                              ("Study date", self.dates), ("Accession", self.accession), ("Modality", self.modality)):
            form.addRow(label, widget)
        self.search_button = QPushButton("Search", self)
        self.search_button.setDefault(True)
        self.search_button.clicked.connect(self.search)
        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.doubleClicked.connect(lambda _: self.retrieve())
        self.retrieve_button = QPushButton("Retrieve", self)
        self.retrieve_button.clicked.connect(self.retrieve)
        self.cancel_button = QPushButton("Cancel retrieve", self)
        self.cancel_button.clicked.connect(self.cancel)
        self.close_button = QPushButton("Close", self)
        self.close_button.clicked.connect(self.reject)
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("" if isinstance(nodes, dict) and nodes else
                             (nodes if isinstance(nodes, str) else "No PACS registered: add one with "
                              "'cno-annotate pacs add' (see the README's PACS section)."), self)
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        buttons = QHBoxLayout()
        buttons.addWidget(self.search_button)
        buttons.addStretch(1)
        for button in (self.retrieve_button, self.cancel_button, self.close_button):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        self.resize(900, 560)
        self._update_buttons()
        self.patient_id.setFocus(Qt.OtherFocusReason)

    # -- actions ------------------------------------------------------------------------
    def query(self) -> StudyQuery:
        """The search fields as a query (a bad date raises CnoError with a one-line message)."""
        start, end = parse_date_range(self.dates.text()) if self.dates.text().strip() else ("", "")
        return StudyQuery(patient_id=self.patient_id.text().strip(), patient_name=self.patient_name.text().strip(),
                          date_from=start, date_to=end, accession=self.accession.text().strip(),
                          modality=self.modality.text().strip())

    def search(self) -> None:
        """Search the chosen PACS in the background; the table fills when the answer arrives."""
        if self.busy or not self.node.currentText():
            return
        try:
            query = self.query()
        except CnoError as exc:
            self.status.setText(str(exc))
            return
        name = self.node.currentText()

        def work(_signals: _Signals) -> list[StudyMatch]:
            with open_client(config.get_node(name)) as client:
                return client.find_studies(query)

        self._start(work, "Searching…")

    def retrieve(self) -> None:
        """Retrieve the selected study into the store in the background (progress, cancel)."""
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if self.busy or not rows:
            return
        study = self.matches[rows[0].row()]
        name, root, cancel = self.node.currentText(), self.store_root, self.cancel_event
        cancel.clear()
        self.progress.setRange(0, max(study.instances or 0, 1))
        self.progress.setValue(0)

        def work(signals: _Signals):
            store = Store.open(root)
            try:
                with open_client(config.get_node(name)) as client:
                    return retrieve_study(store, client, study.study_uid, progress=signals.progress.emit,
                                          cancel=cancel,
                                          series_imported=lambda o, _t: signals.series_done.emit(
                                              series_line(o.as_dict())))
            finally:
                store.close()

        self._start(work, f"Retrieving {study.study_uid}…")

    def cancel(self) -> None:
        """Stop the retrieve after the instance in flight (what arrived is imported and kept)."""
        if self.busy:
            self.cancel_event.set()
            self.status.setText("Cancelling: importing what arrived…")

    # -- plumbing ------------------------------------------------------------------------
    def _start(self, work, message: str) -> None:
        signals = _Signals(self)
        signals.found.connect(self._found)
        signals.progress.connect(self._progress)
        signals.series_done.connect(lambda text: self.status.setText(text[:1].upper() + text[1:]))
        signals.finished.connect(self._retrieved)
        signals.failed.connect(self._failed)
        self.busy = True
        self.status.setText(message)
        self._update_buttons()
        self.pool.start(_Job(work, signals))

    def _found(self, matches: list[StudyMatch]) -> None:
        self.busy = False
        self.matches = matches
        self.table.setRowCount(len(matches))
        for row, m in enumerate(matches):
            values = (_date(m.study_date), m.patient_id, m.patient_name.replace("^", " "), m.accession, m.modalities,
                      _n(m.series), _n(m.instances), m.description)
            for column, value in enumerate(values):
                self.table.setItem(row, column, QTableWidgetItem(value))
        if matches:
            self.table.selectRow(0)
        self.status.setText(f"{len(matches)} stud{'y' if len(matches) == 1 else 'ies'} found"
                            + ("; choose one and Retrieve" if matches else ""))
        self._update_buttons()

    def _progress(self, received: int, expected: int) -> None:
        self.progress.setRange(0, max(expected, 1))
        self.progress.setValue(min(received, max(expected, 1)))

    def _retrieved(self, report) -> None:
        self.busy = False
        held = f", {report.already_in_store} already in the store" if report.already_in_store else ""
        verb = "Cancelled after" if report.cancelled else "Retrieved"
        self.status.setText(f"{verb} {report.received} of {counted(report.expected, 'instance')}{held} "
                            f"({report.seconds:.1f} s); {len(report.imported_series)} series imported"
                            + (f"; {len(report.failed)} series not retrieved: "
                               + "; ".join(f"{f['description'] or f['series_uid']}: {f['reason']}"
                                           for f in report.failed) if report.failed else "")
                            + "".join(f"; {series_line(o)}" for o in report.outcomes if o["result"] != "imported")
                            + ("; Retrieve again to finish" if report.cancelled else ""))
        self._update_buttons()
        if report.imported_series or report.already_in_store:
            self.study_retrieved.emit(report.study_uid)

    def _failed(self, message: str) -> None:
        self.busy = False
        self.status.setText(message)
        self._update_buttons()

    def _update_buttons(self) -> None:
        has_node = bool(self.node.currentText())
        selected = bool(self.table.selectionModel() and self.table.selectionModel().selectedRows())
        self.search_button.setEnabled(has_node and not self.busy)
        self.retrieve_button.setEnabled(has_node and selected and not self.busy)
        self.cancel_button.setEnabled(self.busy)

    def reject(self) -> None:
        """Close (a running retrieve is cancelled and finishes importing what arrived first)."""
        self.cancel_event.set()
        self.pool.waitForDone()
        super().reject()


def _nodes_or_message() -> dict | str:
    try:
        return config.load_nodes()
    except CnoError as exc:
        return str(exc)


def _date(text: str) -> str:
    return f"{text[:4]}-{text[4:6]}-{text[6:]}" if len(text) == 8 and text.isdigit() else text


def _n(value: int | None) -> str:
    return "" if value is None else str(value)


def send_sr_in_background(parent, store_root: Path, node_name: str, study_uid: str, reader: str, read_id: str,
                          done: Callable[[str], None]) -> QThreadPool:
    """Export the read as SR and send it to ``node_name`` in a worker; ``done(message)`` in the GUI thread."""
    from cno_annotate.pacs.send import send_read_sr

    pool = QThreadPool(parent)
    pool.setMaxThreadCount(1)
    signals = _Signals(parent)
    signals.finished.connect(lambda uid: done(f"Sent the SR of read {read_id} to {node_name} ({uid})"))
    signals.failed.connect(lambda message: done(f"SR not sent: {message}"))

    def work(_signals: _Signals) -> str:
        store = Store.open(store_root)
        try:
            with open_client(config.get_node(node_name)) as client:
                return send_read_sr(store, client, study_uid, reader, read_id)
        finally:
            store.close()

    pool.start(_Job(work, signals))
    return pool
