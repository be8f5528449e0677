"""Codes of the SR and SEG: the private scheme ``99CNO`` (a published, versioned table) and standard ones.

The table ``schemas/codes/cno-codes-<version>.json`` (validated by
``schemas/code-table.schema.json``) lists every private concept with its meaning
and definition, and which code stands for each item and grade of each scoring
scheme. The SR declares the scheme in its Coding Scheme Identification Sequence.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from highdicom.sr import CodedConcept
from pydicom.sr.codedict import codes

from cno_annotate.annotation.resources import load_versioned_json, schemas_dir
from cno_annotate.annotation.scheme import NOT_ASSESSABLE, Scheme
from cno_annotate.errors import CnoError

CODE_TABLE = "cno-codes-1.2.0"
PRIVATE = "99CNO"

#: Standard concepts (SNOMED CT and DICOM) the reports use.
PROCEDURE = codes.SCT.MagneticResonanceImagingOfWholeBody
FINDING_TYPE = codes.SCT.Lesion
FINDING_CATEGORY = codes.SCT.MorphologicallyAbnormalStructure
WIDTH, DEPTH, LENGTH = codes.SCT.Width, codes.SCT.Depth, codes.SCT.Length  # along LPS x, y, z
VOLUME = codes.SCT.Volume
MM = CodedConcept("mm", "UCUM", "millimeter")
ML = CodedConcept("ml", "UCUM", "milliliter")
SCORE_UNIT = CodedConcept("{score}", "UCUM", "score")
COUNT_UNIT = CodedConcept("{count}", "UCUM", "count")
RATIO_UNIT = CodedConcept("1", "UCUM", "ratio")


@dataclass(frozen=True)
class CodeTable:
    """The private coding scheme: its concepts and the codes of scheme items and grades."""

    document: dict

    @property
    def version(self) -> str:
        """The table's version (also the coding scheme version declared in the SR)."""
        return self.document["version"]

    @property
    def scheme_info(self) -> dict:
        """Designator, name, version and organization of the coding scheme."""
        return self.document["coding_scheme"]

    def concept(self, value: str) -> CodedConcept:
        """The private concept with this code value.

        Raises
        ------
        CnoError
            If the table has no such code.
        """
        for entry in self.document["concepts"]:
            if entry["value"] == value:
                return CodedConcept(value, PRIVATE, entry["meaning"], self.version)
        raise CnoError(f"code {value!r} is not in the {PRIVATE} code table {self.version}")

    def has(self, value: str) -> bool:
        """Whether the table defines this code value."""
        return any(entry["value"] == value for entry in self.document["concepts"])

    def scheme_code(self, scheme: Scheme) -> CodedConcept:
        """The code of a scoring scheme version (the method of every measurement group)."""
        return self.concept(self._scheme(scheme_key(scheme))["code"])

    def scheme_of(self, value: str) -> tuple[str, str] | None:
        """The scoring scheme (id, version) whose code is ``value``, or None."""
        key = next((k for k, s in self.document["schemes"].items() if s["code"] == value), None)
        if key is None:
            return None
        ident, _, version = key.rpartition("-")
        return ident, version

    def item_code(self, scheme_id: str, item_id: str) -> CodedConcept:
        """The code of a scheme item."""
        return self.concept(self._item(scheme_id, item_id)["code"])

    def grade_code(self, scheme_id: str, item_id: str, grade) -> CodedConcept:
        """The code of a grade of an item (``NA``: not assessable)."""
        if grade == NOT_ASSESSABLE:
            return self.concept("NOT-ASSESSABLE")
        return self.concept(self._item(scheme_id, item_id)["grades"][str(grade)])

    def item_of(self, scheme_id: str, value: str) -> str | None:
        """The item id of a scheme whose code is ``value``, or None."""
        items = self._scheme(scheme_id)["items"]
        return next((iid for iid, item in items.items() if item["code"] == value), None)

    def grade_of(self, scheme_id: str, item_id: str, value: str) -> int | str | None:
        """The grade (int or ``NA``) of an item whose code is ``value``, or None."""
        if value == "NOT-ASSESSABLE":
            return NOT_ASSESSABLE
        grades = self._item(scheme_id, item_id)["grades"]
        return next((int(g) for g, code in grades.items() if code == value), None)

    def _scheme(self, scheme_id: str) -> dict:
        try:
            return self.document["schemes"][scheme_id]
        except KeyError:
            raise CnoError(f"scoring scheme {scheme_id} has no codes in the {PRIVATE} table {self.version}") from None

    def _item(self, scheme_id: str, item_id: str) -> dict:
        try:
            return self._scheme(scheme_id)["items"][item_id]
        except KeyError:
            raise CnoError(f"item {item_id!r} of {scheme_id} has no code in the {PRIVATE} table {self.version}") \
                from None


def scheme_key(scheme: Scheme) -> str:
    """How the code table names a scheme version: ``rai-cromris-2.0.0``."""
    return f"{scheme.id}-{scheme.version}"


@lru_cache(maxsize=4)
def load_code_table(name: str = CODE_TABLE) -> CodeTable:
    """Load and validate the private code table by name."""
    return CodeTable(load_versioned_json(schemas_dir() / "codes" / f"{name}.json", "code-table"))


def coded(code: dict, table: CodeTable) -> CodedConcept:
    """A taxonomy code (``{"value", "scheme", "meaning"}``) as a concept (private ones from the table)."""
    if code["scheme"] == PRIVATE:
        return table.concept(code["value"])
    return CodedConcept(code["value"], code["scheme"], code["meaning"])
