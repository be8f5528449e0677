"""How often a click on a vertebral body proposes its own level, over generated studies.

    python bench/vertebral_levels.py [--seeds 30-41]

For each seed a default study (4 stations x 16 slices of 128 x 128) is generated and imported;
on its composed STIR and T1 every vertebral body of the generator (``phantom.vertebra_centres``)
is clicked at its centre, a quarter of its height above and below, just inside its upper and lower
endplates (2.5 mm in from the body's end, disc half included: 4 mm from a cervical body's centre),
and half its radius to either side. Prints each wrong proposal and the counts, per kind of click
and per region (C, T, L). Not a test: a sweep over more seeds than the suite generates.
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from cno_annotate.annotation.taxonomy import load_taxonomy
from cno_annotate.display.checklist import propose_site
from cno_annotate.importer import import_paths
from cno_annotate.phantom import vertebra_centres
from cno_annotate.sample import StudyPlan, generate_study
from cno_annotate.store import Store
from cno_annotate.volumes import load_volume


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="30-41", help="first-last seed (default 30-41)")
    first, last = (int(x) for x in parser.parse_args().seeds.split("-"))
    taxonomy = load_taxonomy()
    total: Counter[tuple[str, str]] = Counter()
    wrong: Counter[tuple[str, str]] = Counter()
    for seed in range(first, last + 1):
        with tempfile.TemporaryDirectory() as folder:
            generate_study(Path(folder) / "study", StudyPlan(seed=seed))
            store = Store.open(Path(folder) / "store")
            import_paths(store, [Path(folder) / "study"])
            for row in (v for v in store.volumes() if v.kind == "composed"):
                volume = load_volume(store, row.volume_id)
                for level, (centre, height, radius) in vertebra_centres().items():
                    for kind, offset in _clicks(height, radius).items():
                        total[kind, level[0]] += 1
                        site, _ = propose_site(volume, taxonomy, centre + offset)
                        if site != f"spine.{level}":
                            wrong[kind, level[0]] += 1
                            print(f"seed {seed} {row.role}: {level} {kind} -> {site}")
            store.close()
    for kind in _clicks(13.0, 11.0):
        counts = ", ".join(f"{r} {total[kind, r] - wrong[kind, r]}/{total[kind, r]}" for r in "CTL")
        print(f"{kind:>22}: {counts}")
    print(f"{sum(total.values()) - sum(wrong.values())} of {sum(total.values())} clicks propose their own level "
          f"({sum(wrong.values())} wrong)")


def _clicks(height: float, radius: float) -> dict[str, np.ndarray]:
    """Where a body is clicked, by name: offsets (LPS mm) from its centre."""
    inside = height / 2 - 2.5
    return {"centre": np.zeros(3), "quarter above": np.array([0.0, 0.0, height / 4]),
            "quarter below": np.array([0.0, 0.0, -height / 4]),
            "upper endplate": np.array([0.0, 0.0, inside]), "lower endplate": np.array([0.0, 0.0, -inside]),
            "half radius right": np.array([-radius / 2, 0.0, 0.0]),
            "half radius left": np.array([radius / 2, 0.0, 0.0])}


if __name__ == "__main__":
    main()
