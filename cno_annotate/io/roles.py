"""Recognise a series from its headers: STIR, T1 or something else, and what a radiologist calls it.

This module is the one place for the recognition rules. They follow the MR Image Module
(ScanningSequence, ScanOptions, InversionTime, RepetitionTime, EchoTime, ImageType) and, for
enhanced MR, the MR pulse sequence module (EchoPulseSequence, EchoPlanarPulseSequence) and the MR
functional groups (MRModifierSequence, MRTimingAndRelatedParametersSequence, MREchoSequence,
MRImageFrameTypeSequence), read by ``dicom_index``, with the vendors' own ways of saying the same
thing. Names are a fallback only, used when the acquisition parameters do not decide.

- Inversion recovery is STIR only when its inversion time is short (fat
  nulling, about 90-300 ms); FLAIR (TI >= 1500 ms) and gradient-echo IR
  (MPRAGE/TFE, TI ~ 800-1100 ms) use the same family of sequence names, so
  names never override the inversion time. A spin-echo IR with a TI in
  between and a short TE is a T1 FLAIR. An inversion time of 0 or beyond
  10 s is no inversion time (Philips writes TI 0 on series without
  inversion, and 1.8e308 in enhanced InversionTimes).
- GE states inversion recovery in ScanOptions as ``IR_GEMS``; GE's research
  mode (ScanningSequence ``RM``) states no sequence family at all.
- Echo-planar or diffusion series are never STIR or T1: an echo-planar
  inversion recovery with a short TI is DWIBS (diffusion with fat
  suppression).
- Dixon images are told by ImageType / FrameType (Siemens and Philips
  enhanced ``DIXON\\WATER``, ``FAT``, ``IN_PHASE``, ``OPP_PHASE``; Philips
  classic ``W``, ``F``, ``IP``, ``OP``, as ``W_FFE``...) or by the name
  (Siemens ``..._dixon_..._W``, Philips mDIXON, GE IDEAL and LAVA-Flex with
  ``WATER:``, ``FAT:``, ``InPhase:``, ``OutPhase:``). The in-phase image of
  a T1-weighted (gradient-echo or T1-named) Dixon is a T1; the other Dixon
  images are not STIR or T1.
- Spin echo without inversion is T1 when TR <= 1000 ms and TE < 30 ms and
  it is not fat saturated. The bound includes 1000 ms because T1 lengthens
  at 3 T and T1 TSE protocols there use TR up to 1000 ms; proton density
  and T2 spin echo use TR of 2000 ms and more. Fat saturation is ScanOptions
  FS, Philips' private SPIR flag, or SPAIR / SPIR / FS in the name: SPAIR
  and SPIR are spectral fat suppression, never STIR.
- Gradient echo (Philips TFE/FFE, Siemens FLASH/VIBE, GE SPGR/LAVA, Canon
  FE) is T1 when the name or Philips' private Scanning Technique
  Description (2001,xx20), such as ``T1TFE``, says T1 and it is not fat
  saturated.
- Enhanced MR states the contrast in FrameType value 3 (image flavour
  ``T1``, ``T2``, ``PROTON_DENSITY``, ``STIR``, ``FLUID_ATTENUATED``); it is
  used when the parameters do not decide.

Every reason states the header values actually used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
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
#: Inversion times outside this range are no inversion time (Philips' 0, enhanced InversionTimes' 1.8e308).
PLAUSIBLE_TI_MS = (0.0, 10000.0)
T1_MAX_TR_MS = 1000.0
T1_MAX_TE_MS = 30.0
T2_MIN_TE_MS = 60.0
PD_MAX_TE_MS = 40.0
PD_MIN_TR_MS = 1500.0
#: A spin-echo IR with a TI between STIR's and FLAIR's, TR below this and a short TE is a T1 FLAIR.
T1_FLAIR_MAX_TR_MS = 3500.0

# Names are matched as words: a match may not continue a word on its left ("REST1", "ST1").
# Philips prefixes SENSE protocols with "s" ("sSTIR", "sT1W_TSE").
_STIR_NAME = re.compile(r"(?<![a-z])(s?stir|tirm|t2.?tir|fsir|fse.?ir)", re.IGNORECASE)
_T1_NAME = re.compile(r"(?<![a-z0-9])(t1|st1w)(?![0-9])", re.IGNORECASE)
_T2_NAME = re.compile(r"(?<![a-z0-9])s?t2(?![0-9*])", re.IGNORECASE)
_PD_NAME = re.compile(r"(?<![a-z0-9])s?pd(?![a-z0-9])|proton.?density", re.IGNORECASE)
_T1_EXCLUDED = re.compile(r"(?<![a-z])(fs|fat|gd|post|dixon|flair|mprage|spair|spir)|\+c", re.IGNORECASE)
_FAT_SAT_NAME = re.compile(r"(?<![a-z])(fs|fat.?sat|fatsat|chess)(?![a-z])|spair|spir(?![a-z])", re.IGNORECASE)
_EPI_NAME = re.compile(r"epi|^\*?ep", re.IGNORECASE)
_DIFFUSION_IMAGE_TYPES = {"DIFFUSION", "ADC", "TRACEW", "FA", "EADC"}

_LOCALIZER_NAME = re.compile(r"localizer|localiser|scout|survey|(?<![a-z])loc(?![a-z])|3.?plane", re.IGNORECASE)
_DWIBS_NAME = re.compile(r"dwibs", re.IGNORECASE)
#: Names of other sequences, first match wins: (pattern, class name).
_OTHER_NAMES: tuple[tuple[re.Pattern[str], str], ...] = (
    (_LOCALIZER_NAME, "localizer"),
    (_DWIBS_NAME, "DWIBS"),
    *((re.compile(p, re.IGNORECASE), n) for p, n in (
        (r"(?<![a-z])adc(?![a-z])", "ADC"),
        (r"(?<![a-z])(dwi|diff|dti)", "DWI"),
        (r"(?<![a-z0-9])s?t1.?(w.?)?flair", "T1 FLAIR"),
        (r"flair|dark.?fluid", "FLAIR"),
        (r"mprage|mp.?rage|(?<![a-z])mpr(?![a-z])", "MPRAGE"),
    )),
)

#: Dixon images: class name -> ImageType / FrameType values, and name words, that say it.
_DIXON_IMAGE_TYPES = {
    "Dixon water": {"WATER", "W"},
    "Dixon fat": {"FAT", "F"},
    "Dixon in-phase": {"IN_PHASE", "INPHASE", "IP"},
    "Dixon opposed-phase": {"OPP_PHASE", "OUT_PHASE", "OUT_OF_PHASE", "OPPOSED_PHASE", "OP"},
}
_DIXON_WORDS = {
    "Dixon water": {"water", "w", "wat"},
    "Dixon fat": {"fat", "f"},
    "Dixon in-phase": {"in", "inphase", "ip"},
    "Dixon opposed-phase": {"opp", "op", "out", "outphase", "oop", "opposed"},
}
#: Single letters that name a Dixon image only where the series is known to be Dixon (or is Philips').
_DIXON_LETTERS = {"W", "F", "IP", "OP"}
_DIXON_NAME = re.compile(r"dixon|(?<![a-z])(ideal|flex)|(?<![a-z])wfop(?![a-z])", re.IGNORECASE)
_DIXON_SCAN_OPTIONS = {"IDEAL_GEMS", "FLEX_GEMS", "DIXON"}

#: Enhanced MR image flavour (FrameType / ImageType value 3) -> (role, class name).
_FLAVOURS = {
    "STIR": (SequenceRole.STIR, "STIR"),
    "T1": (SequenceRole.T1, "T1"),
    "T2": (SequenceRole.OTHER, "T2"),
    "PROTON_DENSITY": (SequenceRole.OTHER, "PD"),
    "FLUID_ATTENUATED": (SequenceRole.OTHER, "FLAIR"),
}
_NAME_KEYWORDS = ("SeriesDescription", "ProtocolName", "SequenceName", "PulseSequenceName", "PhilipsTechnique")
#: How a reason names a private attribute.
_NAME_PLACES = {"PhilipsTechnique": "Philips Scanning Technique Description (2001,xx20)"}


@dataclass(frozen=True)
class SeriesClass:
    """What a series is: its role in a CNO read, what a radiologist calls it, and why.

    ``name`` is the class a radiologist gives ("STIR", "T1", "Dixon water", "T2 fat-sat", "DWI",
    "localizer"...), "" when the headers do not say.
    """

    role: SequenceRole
    name: str
    reason: str


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
    found = recognise_series(attributes)
    return found.role, found.reason


def recognise_series(attributes: dict[str, Any]) -> SeriesClass:
    """The role, class name and reason of a series, from its headers (see the module's rules).

    Examples
    --------
    >>> recognise_series({"ScanningSequence": ["GR"], "ImageType": ["DERIVED", "PRIMARY", "DIXON", "WATER"]}).name
    'Dixon water'
    """
    headers = _Headers.of(attributes)
    for rule in (_echo_planar_or_diffusion, _localizer, _dixon, _inversion_recovery, _spin_echo, _gradient_echo,
                 _flavour):
        found = rule(headers)
        if found is not None:
            return found
    return _classify_by_name(headers)


@dataclass(frozen=True)
class _Headers:
    """The attributes as the rules read them: tokens upper-cased, an implausible TI dropped."""

    attributes: dict[str, Any]
    scanning: list[str]
    options: list[str]
    image_type: list[str]
    ti: float | None
    tr: float | None
    te: float | None
    inversion: str
    spin: str
    gradient: str
    fat_sat: str
    dropped_ti: str

    @classmethod
    def of(cls, attributes: dict[str, Any]) -> _Headers:
        scanning = _tokens(attributes.get("ScanningSequence"))
        options = _tokens(attributes.get("ScanOptions"))
        ti = attributes.get("InversionTime")
        dropped = ""
        if ti is not None and not PLAUSIBLE_TI_MS[0] < ti < PLAUSIBLE_TI_MS[1]:
            dropped, ti = f"InversionTime {ti:g} ignored (no inversion time)", None
        spin, gradient = _echo_family(attributes, scanning)
        image_type = _tokens(attributes.get("FrameType")) or _tokens(attributes.get("ImageType"))
        return cls(attributes, scanning, options, image_type, ti, attributes.get("RepetitionTime"),
                   attributes.get("EchoTime"), _inversion_source(attributes, scanning, options), spin, gradient,
                   _fat_sat_source(attributes, options), dropped)

    def names(self) -> list[tuple[str, str]]:
        """(where, name) of every name the headers give, description first."""
        return [(_NAME_PLACES.get(k, k), str(self.attributes[k])) for k in _NAME_KEYWORDS if self.attributes.get(k)]

    def named(self, pattern: re.Pattern[str]) -> tuple[str, str] | None:
        """The first (keyword, name) that matches ``pattern``."""
        return next(((k, n) for k, n in self.names() if pattern.search(n)), None)


def _echo_planar_or_diffusion(h: _Headers) -> SeriesClass | None:
    planar = _echo_planar_source(h.attributes, h.scanning)
    diffusion = _diffusion_source(h.attributes)
    if h.inversion and planar:
        with_ti = f", TI {h.ti:g} ms" if h.ti is not None else ""
        return SeriesClass(SequenceRole.OTHER, "DWIBS", (
            f"echo-planar ({planar}) inversion recovery ({h.inversion}{with_ti}): "
            "diffusion with fat suppression (DWIBS), not STIR"))
    if not (diffusion or planar):
        return None
    name = "ADC" if {"ADC", "EADC"} & set(h.image_type) else "DWI" if diffusion else "EPI"
    named = h.named(_DWIBS_NAME)
    if named and name != "ADC":
        name = "DWIBS"
    return SeriesClass(SequenceRole.OTHER, name,
                       f"{'diffusion' if diffusion else 'echo-planar'} ({diffusion or planar}), not STIR or T1")


def _localizer(h: _Headers) -> SeriesClass | None:
    if "LOCALIZER" in h.image_type:
        return SeriesClass(SequenceRole.OTHER, "localizer", "ImageType LOCALIZER: a localizer, not STIR or T1")
    named = h.named(_LOCALIZER_NAME)
    if named:
        return SeriesClass(SequenceRole.OTHER, "localizer", f"{named[0]} '{named[1]}' names a localizer")
    return None


def _dixon(h: _Headers) -> SeriesClass | None:
    """A Dixon image (water, fat, in-phase, opposed-phase), from ImageType, ScanOptions or the name."""
    types = {t.split("_FFE")[0] if t.endswith("_FFE") else t for t in h.image_type}
    named = h.named(_DIXON_NAME)
    philips = "PHILIPS" in str(h.attributes.get("Manufacturer") or "").upper()
    evidence = ("ImageType DIXON" if "DIXON" in types else
                f"ScanOptions {'/'.join(sorted(_DIXON_SCAN_OPTIONS & set(h.options)))}"
                if _DIXON_SCAN_OPTIONS & set(h.options) else f"{named[0]} '{named[1]}'" if named else "")
    image = ""
    for name, values in _DIXON_IMAGE_TYPES.items():
        found = values & types if (evidence or philips) else (values - _DIXON_LETTERS) & types
        if found:
            image, evidence = name, evidence or "ImageType " + "\\".join(h.image_type)
            break
    if not evidence:
        return None
    if not image:
        image = _dixon_image_by_name(h) or "Dixon"
    weighted_t1 = bool(h.gradient and not h.spin) or any(_T1_NAME.search(n) for _, n in h.names())
    if image == "Dixon in-phase" and weighted_t1:
        return SeriesClass(SequenceRole.T1, image, f"in-phase image of a T1-weighted Dixon ({evidence})")
    return SeriesClass(SequenceRole.OTHER, image, f"{image} image ({evidence}), not STIR or T1")


def _dixon_image_by_name(h: _Headers) -> str:
    for _, name in h.names():
        words = set(re.split(r"[^0-9a-z]+", name.lower()))
        for image, values in _DIXON_WORDS.items():
            if values & words:
                return image
    return ""


def _inversion_recovery(h: _Headers) -> SeriesClass | None:
    if not h.inversion or h.ti is None:
        return None
    ti, inversion = h.ti, h.inversion
    if h.gradient and not h.spin:
        return SeriesClass(SequenceRole.OTHER, "IR gradient echo",
                           f"gradient-echo inversion recovery ({inversion}, {h.gradient}, TI {ti:g} ms), not STIR")
    if STIR_TI_MS[0] <= ti <= STIR_TI_MS[1]:
        return SeriesClass(SequenceRole.STIR, "STIR", f"inversion recovery ({inversion}) with short TI {ti:g} ms")
    if ti >= FLAIR_TI_MS:
        return SeriesClass(SequenceRole.OTHER, "FLAIR",
                           f"inversion recovery ({inversion}) with long TI {ti:g} ms (FLAIR), not STIR")
    outside = (f"inversion recovery ({inversion}) with TI {ti:g} ms, outside the STIR range "
               f"{STIR_TI_MS[0]:g}-{STIR_TI_MS[1]:g} ms")
    if (ti > STIR_TI_MS[1] and h.tr is not None and h.te is not None and h.tr <= T1_FLAIR_MAX_TR_MS
            and h.te < T1_MAX_TE_MS):
        return SeriesClass(SequenceRole.OTHER, "T1 FLAIR", f"{outside}, TR {h.tr:g} ms, TE {h.te:g} ms: a T1 FLAIR")
    return SeriesClass(SequenceRole.OTHER, "IR", outside)


def _spin_echo(h: _Headers) -> SeriesClass | None:
    if h.inversion or not h.spin or h.tr is None or h.te is None:
        return None
    tr, te = h.tr, h.te
    fat = f", fat saturated ({h.fat_sat})" if h.fat_sat else ""
    if tr <= T1_MAX_TR_MS and te < T1_MAX_TE_MS and not h.fat_sat:
        return SeriesClass(SequenceRole.T1, "T1", f"spin echo ({h.spin}) with short TR {tr:g} ms and TE {te:g} ms"
                           + _ignored(h))
    weighting = ("T1" if tr <= T1_MAX_TR_MS and te < T1_MAX_TE_MS else "T2" if te >= T2_MIN_TE_MS
                 else "PD" if te < PD_MAX_TE_MS and tr >= PD_MIN_TR_MS else "")
    name = f"{weighting} fat-sat" if weighting and h.fat_sat else weighting
    return SeriesClass(SequenceRole.OTHER, name, (
        f"spin echo ({h.spin}) with TR {tr:g} ms, TE {te:g} ms{fat}: not T1-weighted "
        f"(T1 needs TR <= {T1_MAX_TR_MS:g} ms, TE < {T1_MAX_TE_MS:g} ms, no fat saturation)" + _ignored(h)))


def _gradient_echo(h: _Headers) -> SeriesClass | None:
    if h.inversion or not h.gradient or h.spin:
        return None
    named = h.named(_T1_NAME)
    if named is None:
        return None
    values = "".join(f", {label} {v:g} ms" for label, v in (("TR", h.tr), ("TE", h.te)) if v is not None)
    if h.fat_sat:
        return SeriesClass(SequenceRole.OTHER, "T1 fat-sat",
                           f"{h.gradient}{values}, fat saturated ({h.fat_sat}): not the anatomical T1")
    return SeriesClass(SequenceRole.T1, "T1", f"{h.gradient}{values}, named T1 by {named[0]} '{named[1]}'")


def _flavour(h: _Headers) -> SeriesClass | None:
    keyword = "FrameType" if h.attributes.get("FrameType") else "ImageType"
    if len(h.image_type) < 3 or h.image_type[2] not in _FLAVOURS:
        return None
    if h.image_type[2] == "STIR" and h.ti is not None:
        return None  # a stated TI outside the STIR range has already said otherwise
    role, name = _FLAVOURS[h.image_type[2]]
    return SeriesClass(role, name, f"{keyword} " + "\\".join(h.image_type) + f" states the contrast {name}"
                       + (f" ({h.gradient or h.spin})" if h.gradient or h.spin else ""))


def _ignored(h: _Headers) -> str:
    return f"; {h.dropped_ti}" if h.dropped_ti else ""


def _classify_by_name(h: _Headers) -> SeriesClass:
    summary = _header_summary(h.attributes, h.inversion, h.spin or h.gradient)
    ti = h.ti
    for keyword, name in h.names():
        for pattern, other in _OTHER_NAMES:
            if pattern.search(name):
                return SeriesClass(SequenceRole.OTHER, other, f"{keyword} '{name}' names another sequence ({other})")
        if _STIR_NAME.search(name) and (ti is None or STIR_TI_MS[0] <= ti <= STIR_TI_MS[1]):
            with_ti = f", TI {ti:g} ms in the STIR range" if ti is not None else ""
            return SeriesClass(SequenceRole.STIR, "STIR", f"{keyword} '{name}' names STIR{with_ti} ({summary})"
                               + _ignored(h))
        t1 = _T1_NAME.search(name)
        fat_sat = h.fat_sat or (_FAT_SAT_NAME.search(name) and f"{keyword} '{name}'")
        if t1 and not h.inversion and not _T1_EXCLUDED.search(name[t1.end():]) and not fat_sat:
            return SeriesClass(SequenceRole.T1, "T1", f"{keyword} '{name}' names T1 ({summary})")
        weighting = "T1" if t1 else "T2" if _T2_NAME.search(name) else "PD" if _PD_NAME.search(name) else ""
        if weighting:
            label = f"{weighting} fat-sat" if fat_sat else weighting
            return SeriesClass(SequenceRole.OTHER, label,
                               f"no STIR or T1 evidence in the headers: {keyword} '{name}' names {label} ({summary})")
    if h.inversion:
        return SeriesClass(SequenceRole.OTHER, "IR", f"no STIR or T1 evidence in the headers ({summary})"
                           + _ignored(h))
    return SeriesClass(SequenceRole.OTHER, "", f"no STIR or T1 evidence in the headers ({summary})" + _ignored(h))


def _fat_sat_source(attributes: dict[str, Any], options: list[str]) -> str:
    """Where fat saturation is stated ("" when it is not): ScanOptions FS, Philips' SPIR flag."""
    if "FS" in options:
        return "ScanOptions FS"
    if str(attributes.get("PhilipsSPIR") or "").upper() in ("Y", "YES"):
        return "Philips SPIR (2001,xx21) Y"
    return ""


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
    if "IR" in options or "IR_GEMS" in options:
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
