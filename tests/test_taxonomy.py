"""The site taxonomy and the data files in schemas/."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pydicom.sr._concepts_dict as pydicom_concepts
import pytest

from cno_annotate.annotation.resources import schemas_dir
from cno_annotate.annotation.taxonomy import load_taxonomy

SCHEMAS = schemas_dir()
SCT: dict[str, set[str]] = {}
for _by_value in pydicom_concepts.concepts["SCT"].values():
    for _value, (_meaning, _cids) in _by_value.items():
        SCT.setdefault(_value, set()).add(_meaning)
TABLE_2 = ["Clavicle", "Shoulder", "Humerus", "Radius", "Ulna", "Elbow", "Wrist", "Hand", "Pelvis", "Hip", "Femur",
           "Knee", "Tibia", "Fibula", "Ankle", "Metatarsals", "Spine", "Scapula", "Ribs", "Sternum", "Mandible"]


def test_every_schema_is_a_valid_json_schema():
    for path in SCHEMAS.glob("*.schema.json"):
        schema = json.loads(path.read_text())
        jsonschema.validators.validator_for(schema).check_schema(schema)


@pytest.mark.parametrize("data, schema", [("sites/cno-sites-1.0.0.json", "site-taxonomy.schema.json"),
                                          ("schemes/rai-cromris-1.0.0.json", "scoring-scheme.schema.json"),
                                          ("schemes/cno-descriptive-1.0.0.json", "scoring-scheme.schema.json"),
                                          ("sites/cno-sites-2.0.0.json", "site-taxonomy-1.1.0.schema.json")])
def test_data_files_validate(data, schema):
    jsonschema.validate(json.loads((SCHEMAS / data).read_text()), json.loads((SCHEMAS / schema).read_text()))


def _codes(document: dict):
    for site in document["sites"]:
        yield f"site {site['id']}", site["code"]
        yield f"bone of {site['id']}", site["bone_code"]
    for side, code in document["laterality"].items():
        yield f"side {side}", code
    for name, sub in document["subsites"].items():
        yield f"sub-site {name}", sub["code"]


def test_every_snomed_code_matches_pydicom():
    document = load_taxonomy().document
    checked = 0
    for where, code in _codes(document):
        if code["scheme"] != "SCT":
            assert code["scheme"] == "99CNO", where
            continue
        assert code["value"] in SCT, f"{where}: {code['value']} is not a SNOMED CT code pydicom knows"
        assert code["meaning"] in SCT[code["value"]], where
        checked += 1
    assert checked > 60


def test_radius_is_the_bone_not_the_geometric_radius():
    taxonomy = load_taxonomy()
    assert taxonomy.site("radius.shaft").bone_code["value"] == "62413002"
    assert all(s.code["value"] != "131190003" and s.bone_code["value"] != "131190003" for s in taxonomy.sites.values())


def test_hierarchy_covers_the_issue_list():
    taxonomy = load_taxonomy("cno-sites-1.0.0")
    vertebrae = [f"spine.{p}{n}" for p, c in (("C", 7), ("T", 12), ("L", 5)) for n in range(1, c + 1)]
    for site_id in vertebrae + ["sacrum", "coccyx", "mandible", "sternum.body", "rib.1", "scapula.body",
                                "sternoclavicular_joint", "ilium", "ischium", "pubis", "acetabulum", "sacroiliac_joint",
                                "clavicle.medial", "clavicle.shaft", "clavicle.lateral", "patella", "metatarsals",
                                "carpals", "metacarpals", "talus", "calcaneus"]:
        assert site_id in taxonomy.sites, site_id
    for bone in ("humerus", "radius", "ulna", "femur", "tibia", "fibula"):
        for segment in ("proximal", "shaft", "distal"):
            site = taxonomy.site(f"{bone}.{segment}")
            expected = ["diaphysis"] if segment == "shaft" else ["epiphysis", "physis", "metaphysis"]
            assert list(site.subsites) == expected and site.lateral
    assert taxonomy.site("spine.T8").subsites == ("vertebral_body", "posterior_elements")
    assert not taxonomy.site("spine.T8").lateral and not taxonomy.site("sternum.body").lateral


def test_units_have_sides_only_for_paired_bones():
    taxonomy = load_taxonomy()
    assert taxonomy.unit_id("femur.distal", "L") == "femur.distal:L"
    assert taxonomy.unit_id("spine.T8", None) == "spine.T8"
    assert taxonomy.unit_id("sternum.manubrium", None) == taxonomy.unit_id("sternum.xiphoid", None) == "sternum"
    from cno_annotate.errors import CnoError

    with pytest.raises(CnoError, match="needs a side"):
        taxonomy.unit_id("femur.distal", None)
    site, side = taxonomy.unit_site("tibia.proximal:R")
    assert (site.id, side) == ("tibia.proximal", "R")


@pytest.mark.parametrize("version", ["1.0.0", "2.0.0"])
def test_reporting_groups_follow_table_2(version):
    taxonomy = load_taxonomy(f"cno-sites-{version}")
    top = [g["label"] for g in taxonomy.groups if g["parent"] is None]
    assert top[: len(TABLE_2)] == TABLE_2
    children = {g["label"] for g in taxonomy.groups if g["parent"] == "knee"}
    assert children == {"Distal femur", "Knee", "Proximal tibia"}
    assert taxonomy.group_path(taxonomy.site("femur.distal").group) == ["knee.distal_femur", "knee"]
    assert taxonomy.group_path(taxonomy.site("tibia.proximal").group) == ["knee.proximal_tibia", "knee"]
    if version == "1.0.0":
        assert taxonomy.group_path(taxonomy.site("sacroiliac_joint").group) == ["pelvis.sij", "pelvis"]
    else:  # a lesion at the SI joint lies in the ilium or sacrum, and still counts in the SI joint row
        assert taxonomy.group_path(taxonomy.site("ilium").group_of("periarticular_sij")) == ["pelvis.sij", "pelvis"]
        assert taxonomy.group_path(taxonomy.painful_site("sacroiliac_joint").group) == ["pelvis.sij", "pelvis"]
    assert taxonomy.group_path(taxonomy.site("spine.T8").group) == ["spine.thoracic", "spine"]


@pytest.mark.parametrize("typed, first", [("dist fem", "femur.distal"), ("prox tib", "tibia.proximal"),
                                          ("t8", "spine.T8"), ("med clav", "clavicle.medial"),
                                          ("SI joint", "sacrum"), ("calc", "calcaneus"),
                                          ("radius dist", "radius.distal")])
def test_search_finds_what_a_radiologist_types(typed, first):
    assert load_taxonomy().search(typed)[0].id == first


def test_side_is_proposed_from_the_clicked_side_of_the_body():
    taxonomy = load_taxonomy()
    assert taxonomy.propose_side(-80.0) == "R"  # LPS: the patient's right is -x
    assert taxonomy.propose_side(75.0) == "L"
    assert taxonomy.propose_side(3.0) is None


def test_a_broken_taxonomy_is_refused_with_the_field_path(tmp_path):
    from cno_annotate.errors import CnoError

    document = json.loads((SCHEMAS / "sites" / "cno-sites-1.0.0.json").read_text())
    document["sites"][3]["lateral"] = "yes"
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(document))
    with pytest.raises(CnoError, match=r"broken.json: \$\.sites\[3\]\.lateral: 'yes' is not of type 'boolean'"):
        load_taxonomy(str(path))


def test_schema_files_are_only_added_never_edited():
    """Released schemas keep their version in the file name and their $id (``name.schema.json`` is 1.0.0)."""
    for path in Path(SCHEMAS).glob("*.schema.json"):
        schema = json.loads(path.read_text())
        version = path.name.removesuffix(".schema.json").rpartition("-")[2]
        expected = version if version[:1].isdigit() else "1.0.0"
        assert schema["$id"].endswith(f":{expected}"), path


def test_reads_that_name_taxonomy_1_0_0_still_load_it():
    old = load_taxonomy("cno-sites-1.0.0")
    assert old.site("sacroiliac_joint").unit_type == "joint" and old.site("sacrum").unit_type == "vertebra"
    assert load_taxonomy().version == "2.0.0"


def test_joints_and_the_sacrum_are_decided_in_the_taxonomy_file():
    taxonomy = load_taxonomy()
    topics = {d["topic"]: d for d in taxonomy.decisions}
    assert {"Sacroiliac joint", "Sternoclavicular joint", "Sacrum"} <= set(topics)
    assert all(len(d["reasoning"]) > 100 for d in topics.values() if d["topic"] != "Sternum")
    assert not [s.id for s in taxonomy.sites.values() if s.unit_type == "joint"]
    assert taxonomy.site("sacrum").unit_type == "flat_bone" and taxonomy.site("sacrum").group == "spine.sacral"
    assert "sacroiliac_joint" not in taxonomy.sites and "sacroiliac_joint" in taxonomy.clinical_regions


def test_one_finding_is_never_scored_in_two_units():
    """Every site, with every sub-site, puts a lesion in exactly one bone unit; no two units share a site."""
    from cno_annotate.annotation.scheme import load_scheme
    from cno_annotate.annotation.scoring import score_read
    from tests.lesions import graded_lesion

    taxonomy = load_taxonomy()
    scheme = load_scheme("rai-cromris")
    unit_of_site = {}
    for site in taxonomy.sites.values():
        side = "L" if site.lateral else None
        scores = score_read([graded_lesion("L1", site.id, side, {"marrow_hyperintensity": 1}, scheme=scheme, taxonomy=taxonomy)],
                            {}, scheme, taxonomy)
        lesion_units = [u for u, s in scores.units.items() if s.status == "lesion"]
        assert len(lesion_units) == 1, site.id
        unit_of_site[site.id] = lesion_units[0]
    # the SI joint's two bones are two units: oedema across the joint is two findings, one per bone
    assert unit_of_site["ilium"] != unit_of_site["sacrum"]
    assert unit_of_site["clavicle.medial"] != unit_of_site["sternum.manubrium"]
    # units are made of sites of one bone only (the sternum's three parts form one unit)
    bones: dict[str, set[str]] = {}
    for site in taxonomy.sites.values():
        bones.setdefault(site.unit, set()).add(site.bone)
    assert all(len(b) == 1 for b in bones.values()), {u: b for u, b in bones.items() if len(b) > 1}


def test_the_skeleton_map_is_data_with_a_shape_for_every_site_of_every_taxonomy():
    import subprocess
    import sys

    from cno_annotate.annotation.skeleton import load_skeleton

    skeleton = load_skeleton()
    for name in ("cno-sites-1.0.0", None):
        taxonomy = load_taxonomy(name) if name else load_taxonomy()
        assert skeleton.missing(taxonomy) == [], name
    keys = [(s.site, s.side) for s in skeleton.shapes]
    assert len(keys) == len(set(keys))
    code = "import sys, cno_annotate.analysis.report; sys.exit('cno_annotate.phantom' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0, "the report imports the sample generator"
