"""Sequence roles from headers, and the user's override."""

from __future__ import annotations

import pytest

from cno_annotate.importer import import_paths
from cno_annotate.io.roles import classify_sequence

STORE_BACKENDS = ("sqlite", "postgresql")

SIEMENS_STIR = {"ScanningSequence": ["SE", "IR"], "ScanOptions": ["IR"], "InversionTime": 160.0,
                "RepetitionTime": 4500.0, "EchoTime": 62.0, "SequenceName": "*tir2d1_13"}


@pytest.mark.parametrize(
    "attributes, role, says",
    [
        (SIEMENS_STIR, "STIR", "short TI 160"),
        ({"ScanningSequence": ["SE"], "ScanOptions": ["IR"], "InversionTime": 150.0}, "STIR", "ScanOptions"),
        ({"ScanningSequence": ["SE"], "RepetitionTime": 550.0, "EchoTime": 12.0}, "T1", "short TR"),
        # FLAIR: same Siemens sequence family, long TI.
        ({**SIEMENS_STIR, "InversionTime": 2500.0, "SeriesDescription": "t2_tirm_tra_dark-fluid"}, "other", "FLAIR"),
        # MPRAGE: gradient-echo IR with TI ~ 900 ms.
        ({"ScanningSequence": ["GR", "IR"], "InversionTime": 900.0, "RepetitionTime": 2000.0, "EchoTime": 3.0},
         "other", "gradient-echo"),
        # Even a gradient-echo IR with a short TI is not STIR.
        ({"ScanningSequence": ["GR", "IR"], "InversionTime": 150.0}, "other", "gradient-echo"),
        ({"ScanningSequence": ["SE"], "ScanOptions": ["FS"], "RepetitionTime": 600.0, "EchoTime": 10.0},
         "other", "fat saturated"),
        ({"ScanningSequence": ["SE"], "RepetitionTime": 4000.0, "EchoTime": 90.0}, "other", "not T1"),
        ({"SeriesDescription": "STIR cor whole body"}, "STIR", "name only"),
        ({"SeriesDescription": "T1 TSE cor"}, "T1", "name only"),
        ({"SeriesDescription": "T1 FS post Gd"}, "other", "no STIR or T1"),
        ({"SeriesDescription": "FLAIR tra"}, "other", "another sequence"),
        ({}, "other", "no STIR or T1"),
        ({"InversionRecovery": "YES", "EchoPulseSequence": "SPIN", "InversionTime": 170.0}, "STIR", "TI 170"),
    ],
)
def test_classify_sequence(attributes, role, says):
    got, reason = classify_sequence(attributes)
    assert got == role, reason
    assert says in reason


def test_a_name_never_beats_the_inversion_time():
    role, _ = classify_sequence({**SIEMENS_STIR, "InversionTime": 2200.0, "SeriesDescription": "STIR"})
    assert role == "other"


def test_override_persists_across_reimport_and_replans_composition(small_study, store, cli):
    import_paths(store, [small_study])
    assert sum(v.kind == "composed" for v in store.volumes()) == 2
    stir_stations = [v for v in store.volumes() if v.kind == "stack" and v.role == "STIR"]
    station = max(stir_stations, key=lambda v: v.affine[2][3])  # the head station
    code, out, _ = cli("set-role", station.volume_id, "other", "--store", store.root)
    assert code == 0 and "set by the user" in out
    import_paths(store, [small_study])  # the override survives a re-import
    row = store.volume(station.volume_id)
    assert row.role == "other" and row.overridden and row.auto_role == "STIR"
    stir = [v for v in store.volumes() if v.kind == "composed" and v.role == "STIR"]
    assert len(stir) == 1 and station.volume_id not in stir[0].members
    assert cli("set-role", station.volume_id, "auto", "--store", store.root)[0] == 0
    assert store.volume(station.volume_id).role == "STIR"


# -- issue 11: enhanced MR, DWIBS, name tokens, honest reasons ------------------------------

@pytest.mark.parametrize(
    "attributes, role, says",
    [
        # DWIBS: echo-planar with an inversion pulse (TI 180 ms) is diffusion with fat suppression.
        ({"ScanningSequence": ["EP"], "ScanOptions": ["IR"], "InversionTime": 180.0, "RepetitionTime": 6000.0,
          "EchoTime": 70.0}, "other", "echo-planar"),
        ({"ScanningSequence": ["SE", "IR"], "InversionTime": 180.0, "SequenceName": "*epse2d1_128"},
         "other", "echo-planar"),
        ({"ScanningSequence": ["SE", "IR"], "InversionTime": 180.0, "SeriesDescription": "STIR",
          "SequenceName": "EPI_DWIBS"}, "other", "diffusion"),
        # Enhanced MR: inversion recovery from the MR modifier, echo family from EchoPulseSequence.
        ({"InversionRecovery": "YES", "EchoPulseSequence": "GRADIENT", "InversionTime": 900.0,
          "RepetitionTime": 1800.0, "EchoTime": 2.41, "SeriesDescription": "T1w_MPR"}, "other", "gradient-echo"),
        ({"EchoPulseSequence": "SPIN", "RepetitionTime": 600.0, "EchoTime": 12.0}, "T1", "EchoPulseSequence SPIN"),
        # T1 TSE at 3 T with TR exactly 1000 ms.
        ({"ScanningSequence": ["SE"], "RepetitionTime": 1000.0, "EchoTime": 10.0}, "T1", "TR 1000 ms"),
        ({"ScanningSequence": ["SE"], "RepetitionTime": 1200.0, "EchoTime": 10.0}, "other", "TR 1200 ms"),
    ],
)
def test_enhanced_dwibs_and_bounds(attributes, role, says):
    got, reason = classify_sequence(attributes)
    assert got == role, reason
    assert says in reason, reason


@pytest.mark.parametrize("name", ["REST1", "TRUFI_COR_ST1", "fMRI_REST1_AP", "BEST1"])
def test_t1_fallback_matches_tokens_not_substrings(name):
    role, reason = classify_sequence({"SeriesDescription": name})
    assert role == "other", reason


@pytest.mark.parametrize("name", ["T1 TSE cor", "t1_tse_cor_wb", "WB_T1W", "T1W-TSE", "cor T1"])
def test_t1_fallback_still_names_t1(name):
    assert classify_sequence({"SeriesDescription": name})[0] == "T1"


def test_a_reason_states_the_values_used():
    """A GRE FLASH with TR 300 / TE 2.46 named t1: the reason gives its TR and TE."""
    role, reason = classify_sequence({"ScanningSequence": ["GR"], "RepetitionTime": 300.0, "EchoTime": 2.46,
                                      "SeriesDescription": "t1_fl2d_tra"})
    assert role == "T1"
    assert "no TR/TE" not in reason and "TR 300 ms" in reason and "TE 2.46 ms" in reason
    _, reason = classify_sequence({"EchoPulseSequence": "SPIN", "RepetitionTime": 500.0, "EchoTime": 9.0})
    assert "ScanningSequence" not in reason  # the file has no ScanningSequence
