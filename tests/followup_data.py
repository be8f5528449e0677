"""Small synthetic studies for follow-up tests: two visits of one patient, and a study of another patient."""

from __future__ import annotations

from pathlib import Path

import pydicom

from cno_annotate.sample import StudyPlan, generate_study


def _retag(folder: Path, **values: str) -> None:
    """Rewrite header values in every DICOM file under ``folder`` (the pixels stay as they are)."""
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix == "" and path.name != "ground_truth.json":
            try:
                dataset = pydicom.dcmread(path)
            except pydicom.errors.InvalidDicomError:
                continue
            for key, value in values.items():
                setattr(dataset, key, value)
            dataset.save_as(path, enforce_file_format=True)


def visits(root: Path, first_date: str = "20190104", second_date: str = "20190704",
           other_date: str = "20181201") -> dict[str, str]:
    """Write a baseline and a follow-up of one patient and a study of another patient (earliest of all).

    Returns study key (``baseline``, ``followup``, ``other``) -> StudyInstanceUID.
    """
    uids = {}
    for key, seed, date in (("baseline", 11, first_date), ("followup", 12, second_date), ("other", 13, other_date)):
        truth = generate_study(root / key, StudyPlan(stations=2, slices=3, matrix=32, seed=seed))
        uids[key] = truth["study_uid"]
        same = {"PatientID": "UZ0000001", "PatientName": "Test^Child", "PatientBirthDate": "20150101"}
        _retag(root / key, StudyDate=date, **(same if key != "other" else {}))
    return uids
