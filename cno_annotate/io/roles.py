"""Decide whether a series is STIR, T1 or something else, from its headers.

The rules follow the MR Image Module (ScanningSequence, ScanOptions,
InversionTime, RepetitionTime, EchoTime) and fall back on names only when the
acquisition parameters are missing. An inversion-recovery series is STIR only
when its inversion time is short (fat nulling, about 90-300 ms); FLAIR
(TI >= 1500 ms) and gradient-echo IR (MPRAGE/TFE, TI ~ 800-1100 ms) use the
same family of sequence names, so names never override the inversion time.
"""

from __future__ import annotations

import re
from typing import Any

ROLES = ("STIR", "T1", "other")

STIR_TI_MS = (90.0, 300.0)
FLAIR_TI_MS = 1500.0
T1_MAX_TR_MS = 1000.0
T1_MAX_TE_MS = 30.0

_STIR_NAME = re.compile(r"stir|tirm|t2.?tir|fsir|fse.?ir", re.IGNORECASE)
_T1_NAME = re.compile(r"t1(?!.*(fs|fat|gd|post|\+c|dixon|flair|mprage|tfe))", re.IGNORECASE)
_EXCLUDED_NAME = re.compile(r"flair|dark.?fluid|mprage|tfe|dwi|diff|adc|localizer|scout", re.IGNORECASE)


def classify_sequence(attributes: dict[str, Any]) -> tuple[str, str]:
    """Classify a series as ``"STIR"``, ``"T1"`` or ``"other"``.

    Parameters
    ----------
    attributes : dict
        Header values by DICOM keyword (see ``dicom_index.SEQUENCE_ATTRIBUTES``).

    Returns
    -------
    (role, reason)
        The role and a sentence saying which headers decided it.

    Examples
    --------
    >>> classify_sequence({"ScanningSequence": ["SE", "IR"], "InversionTime": 160})
    ('STIR', 'inversion recovery (ScanningSequence SE\\\\IR) with short TI 160 ms')
    """
    scanning = _tokens(attributes.get("ScanningSequence"))
    options = _tokens(attributes.get("ScanOptions"))
    ti = attributes.get("InversionTime")
    tr = attributes.get("RepetitionTime")
    te = attributes.get("EchoTime")
    inversion = "IR" in scanning or "IR" in options or attributes.get("InversionRecovery") == "YES"
    where = _ir_source(scanning, options)

    if inversion and ti is not None:
        if "GR" in scanning and "SE" not in scanning:
            return "other", f"gradient-echo inversion recovery ({where}, TI {ti:g} ms), not STIR"
        if STIR_TI_MS[0] <= ti <= STIR_TI_MS[1]:
            return "STIR", f"inversion recovery ({where}) with short TI {ti:g} ms"
        if ti >= FLAIR_TI_MS:
            return "other", f"inversion recovery with long TI {ti:g} ms (FLAIR), not STIR"
        return "other", f"inversion recovery with TI {ti:g} ms, outside the STIR range {STIR_TI_MS[0]:g}-{STIR_TI_MS[1]:g} ms"
    if not inversion and ("SE" in scanning or attributes.get("EchoPulseSequence") == "SPIN"):
        if tr is not None and te is not None:
            if tr < T1_MAX_TR_MS and te < T1_MAX_TE_MS and "FS" not in options:
                sequence = "\\".join(scanning) or "SE"
                return "T1", f"spin echo (ScanningSequence {sequence}) with short TR {tr:g} ms and TE {te:g} ms"
            return "other", f"spin echo with TR {tr:g} ms, TE {te:g} ms{', fat saturated' if 'FS' in options else ''}: not T1-weighted"
    return _classify_by_name(attributes, inversion)


def _classify_by_name(attributes: dict[str, Any], inversion: bool) -> tuple[str, str]:
    for keyword in ("SeriesDescription", "ProtocolName", "SequenceName"):
        name = str(attributes.get(keyword) or "")
        if not name:
            continue
        if _EXCLUDED_NAME.search(name):
            return "other", f"{keyword} '{name}' names another sequence"
        if _STIR_NAME.search(name) and attributes.get("InversionTime") is None:
            return "STIR", f"{keyword} '{name}' (name only: no inversion time in the header)"
        if _T1_NAME.search(name) and not inversion:
            return "T1", f"{keyword} '{name}' (name only: no TR/TE in the header)"
    return "other", "no STIR or T1 evidence in the headers"


def _ir_source(scanning: list[str], options: list[str]) -> str:
    if "IR" in scanning:
        return "ScanningSequence " + "\\".join(scanning)
    if "IR" in options:
        return "ScanOptions " + "\\".join(options)
    return "InversionRecovery YES"


def _tokens(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        items = value
    else:
        items = str(value).replace("\\", " ").split()
    return [str(v).strip().upper() for v in items if str(v).strip()]
