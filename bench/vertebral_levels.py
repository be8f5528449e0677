"""How often a click on a vertebral body proposes its own level, over generated studies.

    python bench/vertebral_levels.py [--seeds 30-41]

For each seed a default study (4 stations x 16 slices of 128 x 128) is generated and imported;
on its composed STIR and T1 every vertebral body of the generator (``phantom.vertebra_centres``)
is clicked at its centre, and a thoracic or lumbar one also a quarter of its height above and
below (a cervical body, 13 mm, is within the fit's precision of its edges). Prints each wrong
proposal and the count. Not a test: a sweep over more seeds than the suite generates.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

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
    taxonomy, total, wrong = load_taxonomy(), 0, 0
    for seed in range(first, last + 1):
        with tempfile.TemporaryDirectory() as folder:
            generate_study(Path(folder) / "study", StudyPlan(seed=seed))
            store = Store.open(Path(folder) / "store")
            import_paths(store, [Path(folder) / "study"])
            for row in (v for v in store.volumes() if v.kind == "composed"):
                volume = load_volume(store, row.volume_id)
                for level, (centre, height, _radius) in vertebra_centres().items():
                    for dz in (0.0,) if level.startswith("C") else (-height / 4, 0.0, height / 4):
                        total += 1
                        site, _ = propose_site(volume, taxonomy, centre + [0.0, 0.0, dz])
                        if site != f"spine.{level}":
                            wrong += 1
                            print(f"seed {seed} {row.role}: {level} {dz:+.1f} mm -> {site}")
            store.close()
    print(f"{total - wrong} of {total} clicks propose their own level ({wrong} wrong)")


if __name__ == "__main__":
    main()
