"""Decide whether a series is STIR, T1 or something else, from its headers.

The rules follow the MR Image Module (ScanningSequence, ScanOptions,
InversionTime, RepetitionTime, EchoTime) and, for enhanced MR, the MR pulse
sequence module (EchoPulseSequence, EchoPlanarPulseSequence) and the MR
functional groups (MRModifierSequence, MRTimingAndRelatedParametersSequence,
MREchoSequence), read by ``dicom_index``. Names are a fallback only, used
when the acquisition parameters do not decide.

- Inversion recovery is STIR only when its inversion time is short (fat
  nulling, about 90-300 ms); FLAIR (TI >= 1500 ms) and gradient-echo IR
  (MPRAGE/TFE, TI ~ 800-1100 ms) use the same family of sequence names, so
  names never override the inversion time.
- Echo-planar or diffusion series are never STIR or T1: an echo-planar
  inversion recovery with a short TI is DWIBS (diffusion with fat
  suppression).
- Spin echo without inversion is T1 when TR <= 1000 ms and TE < 30 ms and
  it is not fat saturated. The bound includes 1000 ms because T1 lengthens
  at 3 T and T1 TSE protocols there use TR up to 1000 ms; proton density
  and T2 spin echo use TR of 2000 ms and more.

Every reason states the header values actually used.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any


class SequenceRole(StrEnum):
    """What a series is for in a CNO read: fluid-sensitive STIR, anatomical T1, or neither."""

    STIR = "STIR"
    T1 = "T1"
    OTHER = "other"


#: The role names, in the order the command line offers them.
ROLES = tuple(SequenceRole)

STIR_TI_MS = (90.0, 300.0)
FLAIR_TI_MS = 1500.0
T1_MAX_TR_MS = 1000.0
T1_MAX_TE_MS = 30.0

# Names are matched as words: a match may not continue a word on its left ("REST1", "ST1").
_STIR_NAME = re.compile(r"(?<![a-z])(stir|tirm|t2.?tir|fsir|fse.?ir)", re.IGNORECASE)
_T1_NAME = re.compile(r"(?<![a-z0-9])t1(?![0-9])", re.IGNORECASE)
_T1_EXCLUDED = re.compile(r"(?<![a-z])(fs|fat|gd|post|dixon|flair|mprage|tfe)|\+c", re.IGNORECASE)
_EXCLUDED_NAME = re.compile(r"(?<![a-z])(flair|dark.?fluid|mprage|tfe|dwi|diff|adc|localizer|scout)", re.IGNORECASE)
_EPI_NAME = re.compile(r"epi|^\*?ep", re.IGNORECASE)
_DIFFUSION_IMAGE_TYPES = {"DIFFUSION", "ADC", "TRACEW", "FA", "EADC"}


def classify_sequence(attributes: dict[str, Any]) -> tuple[SequenceRole, str]:
    """Classify a series as ``"STIR"``, ``"T1"`` or ``"other"``.

    Parameters
    ----------
    attributes : dict
        Header values by DICOM keyword (see ``dicom_index.SEQUENCE_ATTRIBUTES``);
        ``FromFunctionalGroups`` lists the keywords read from enhanced MR
        functional groups, ``FromConvertedAttributes`` those read from a
        legacy converted image's unassigned converted attributes.

    Returns
    -------
    (role, reason)
        The role and a sentence saying which header values decided it.

    Examples
    --------
    >>> role, reason = classify_sequence({"ScanningSequence": ["SE", "IR"], "InversionTime": 160})
    >>> role is SequenceRole.STIR, reason
    (True, 'inversion recovery (ScanningSequence SE\\\\IR) with short TI 160 ms')
    """
    scanning = _tokens(attributes.get("ScanningSequence"))
    options = _tokens(attributes.get("ScanOptions"))
    ti = attributes.get("InversionTime")
    tr = attributes.get("RepetitionTime")
    te = attributes.get("EchoTime")
    inversion = _inversion_source(attributes, scanning, options)
    planar = _echo_planar_source(attributes, scanning)
    diffusion = _diffusion_source(attributes)
    spin, gradient = _echo_family(attributes, scanning)

    if inversion and planar:
        with_ti = f", TI {ti:g} ms" if ti is not None else ""
        return SequenceRole.OTHER, (f"echo-planar ({planar}) inversion recovery ({inversion}{with_ti}): "
                                    "diffusion with fat suppression (DWIBS), not STIR")
    if diffusion or planar:
        return SequenceRole.OTHER, f"{'diffusion' if diffusion else 'echo-planar'} ({diffusion or planar}), not STIR or T1"
    if inversion and ti is not None:
        if gradient and not spin:
            return SequenceRole.OTHER, f"gradient-echo inversion recovery ({inversion}, {gradient}, TI {ti:g} ms), not STIR"
        if STIR_TI_MS[0] <= ti <= STIR_TI_MS[1]:
            return SequenceRole.STIR, f"inversion recovery ({inversion}) with short TI {ti:g} ms"
        if ti >= FLAIR_TI_MS:
            return SequenceRole.OTHER, f"inversion recovery ({inversion}) with long TI {ti:g} ms (FLAIR), not STIR"
        return SequenceRole.OTHER, (f"inversion recovery ({inversion}) with TI {ti:g} ms, outside the STIR range "
                                    f"{STIR_TI_MS[0]:g}-{STIR_TI_MS[1]:g} ms")
    if not inversion and spin and tr is not None and te is not None:
        fat_saturated = "FS" in options
        if tr <= T1_MAX_TR_MS and te < T1_MAX_TE_MS and not fat_saturated:
            return SequenceRole.T1, f"spin echo ({spin}) with short TR {tr:g} ms and TE {te:g} ms"
        return SequenceRole.OTHER, (f"spin echo ({spin}) with TR {tr:g} ms, TE {te:g} ms"
                                    f"{', fat saturated (ScanOptions FS)' if fat_saturated else ''}: not T1-weighted "
                                    f"(T1 needs TR <= {T1_MAX_TR_MS:g} ms, TE < {T1_MAX_TE_MS:g} ms)")
    return _classify_by_name(attributes, inversion, _header_summary(attributes, inversion, spin or gradient))


def _classify_by_name(attributes: dict[str, Any], inversion: str, headers: str) -> tuple[SequenceRole, str]:
    for keyword in ("SeriesDescription", "ProtocolName", "SequenceName", "PulseSequenceName"):
        name = str(attributes.get(keyword) or "")
        if not name:
            continue
        if _EXCLUDED_NAME.search(name):
            return SequenceRole.OTHER, f"{keyword} '{name}' names another sequence"
        if _STIR_NAME.search(name) and attributes.get("InversionTime") is None:
            return SequenceRole.STIR, f"{keyword} '{name}' names STIR ({headers})"
        t1 = _T1_NAME.search(name)
        if t1 and not inversion and not _T1_EXCLUDED.search(name[t1.end():]):
            return SequenceRole.T1, f"{keyword} '{name}' names T1 ({headers})"
    return SequenceRole.OTHER, f"no STIR or T1 evidence in the headers ({headers})"


def _header_summary(attributes: dict[str, Any], inversion: str, family: str) -> str:
    """What the headers gave, when they did not decide: the values, never a false 'missing'."""
    parts = []
    if family:
        parts.append(family)
    if inversion:
        parts.append(f"inversion recovery ({inversion}) without an inversion time")
    for keyword, label in (("RepetitionTime", "TR"), ("EchoTime", "TE"), ("InversionTime", "TI")):
        value = attributes.get(keyword)
        if value is not None and not (keyword == "InversionTime" and not inversion):
            parts.append(f"{label} {value:g} ms")
    if not parts:
        return "name only: no sequence type, TR or TE in the header"
    return "by name; headers: " + ", ".join(parts) + " do not decide"


def _inversion_source(attributes: dict[str, Any], scanning: list[str], options: list[str]) -> str:
    """Where inversion recovery is stated ("" when it is not)."""
    if "IR" in scanning:
        return "ScanningSequence " + "\\".join(scanning) + _where(attributes, "ScanningSequence")
    if "IR" in options:
        return "ScanOptions " + "\\".join(options) + _where(attributes, "ScanOptions")
    if str(attributes.get("InversionRecovery") or "").upper() == "YES":
        return "InversionRecovery YES" + _where(attributes, "InversionRecovery")
    return ""


def _echo_family(attributes: dict[str, Any], scanning: list[str]) -> tuple[str, str]:
    """(spin-echo source, gradient-echo source), each "" when not stated."""
    pulse = str(attributes.get("EchoPulseSequence") or "").upper()
    spin = gradient = ""
    if "SE" in scanning:
        spin = "ScanningSequence " + "\\".join(scanning) + _where(attributes, "ScanningSequence")
    elif pulse in ("SPIN", "BOTH"):
        spin = f"EchoPulseSequence {pulse}"
    if "GR" in scanning:
        gradient = "gradient echo (ScanningSequence " + "\\".join(scanning) + ")"
    elif pulse == "GRADIENT":
        gradient = "gradient echo (EchoPulseSequence GRADIENT)"
    return spin, gradient


def _echo_planar_source(attributes: dict[str, Any], scanning: list[str]) -> str:
    if "EP" in scanning:
        return "ScanningSequence " + "\\".join(scanning)
    if str(attributes.get("EchoPlanarPulseSequence") or "").upper() == "YES":
        return "EchoPlanarPulseSequence YES"
    for keyword in ("SequenceName", "PulseSequenceName"):
        name = str(attributes.get(keyword) or "")
        if _EPI_NAME.search(name):
            return f"{keyword} '{name}'"
    return ""


def _diffusion_source(attributes: dict[str, Any]) -> str:
    if attributes.get("DiffusionBValue") is not None:
        return f"b-value {attributes['DiffusionBValue']:g} s/mm2"
    image_type = set(_tokens(attributes.get("ImageType")))
    if image_type & _DIFFUSION_IMAGE_TYPES:
        return "ImageType " + "\\".join(_tokens(attributes.get("ImageType")))
    return ""


def _where(attributes: dict[str, Any], keyword: str) -> str:
    if keyword in attributes.get("FromConvertedAttributes", ()):
        return " in UnassignedSharedConvertedAttributesSequence"
    if keyword in attributes.get("FromFunctionalGroups", ()):
        return " in MRModifierSequence" if keyword in ("InversionRecovery", "InversionTime") else " in functional groups"
    return ""


def _tokens(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        items = value
    else:
        items = str(value).replace("\\", " ").split()
    return [str(v).strip().upper() for v in items if str(v).strip()]
