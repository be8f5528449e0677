"""Lesions for scoring tests, built through the one validating constructor the editor and import use."""

from __future__ import annotations

from collections.abc import Mapping

from cno_annotate.annotation.model import Lesion
from cno_annotate.annotation.scheme import Scheme
from cno_annotate.annotation.taxonomy import Taxonomy
from cno_annotate.annotation.validation import make_lesion


def graded_lesion(lesion_id: str, site_id: str | None, side: str | None, grades: Mapping, *, scheme: Scheme,
                  taxonomy: Taxonomy) -> Lesion:
    """A lesion at the origin of series ``1.2.3`` with this site, side and grades (checked by ``make_lesion``)."""
    return make_lesion(taxonomy, scheme, lesion_id=lesion_id, position=(0.0, 0.0, 0.0), series_uid="1.2.3",
                       voxel=(0.0, 0.0, 0.0), site_id=site_id, side=side, grades=grades)
