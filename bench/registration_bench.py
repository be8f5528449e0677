"""Registration of a 5-station whole-body pair: piecewise per region against one rigid transform.

Generates two visits of one synthetic patient (``cno-annotate sample --timepoints 2``, the
second repositioned: trunk shifted and turned, another table start, limbs turned about their
joints), imports them, and registers the composed STIR volumes twice in one run:

- piecewise: :func:`cno_annotate.registration.register_piecewise` (whole-body start, then one
  rigid registration per body region), timed per step;
- naive: SimpleITK's plain single rigid registration of the whole volumes
  (:func:`cno_annotate.registration.naive_rigid`, geometric centres, no mask).

Accuracy is the target registration error (mm) against the generator's true per-region
transforms, at the truth lesions and at the growth plates (landmarks in every limb), per body
part. Usage: ``python bench/registration_bench.py [--matrix 128] [--slices 24] [--seed 11]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from cno_annotate.importer import import_paths
from cno_annotate.registration import RegistrationTimes, naive_rigid, register_piecewise
from cno_annotate.sample import StudyPlan, generate_study
from cno_annotate.store import Store
from cno_annotate.volumes import load_volume


def composed_stir(store: Store, study_uid: str):
    """The composed STIR volume of a study, loaded."""
    row = next(v for v in store.volumes(study_uid) if v.kind == "composed" and v.role == "STIR")
    return load_volume(store, row.volume_id)


def errors_by_part(truth: dict, mapping) -> dict[str, list[float]]:
    """TRE (mm) per body part at the first visit's lesions and growth plates."""
    true = truth["transforms"][0]["regions"]
    visit = truth["visits"][0]
    out: dict[str, list[float]] = {}
    for point in visit["lesions"] + [v for v in visit["normal_variants"] if v["kind"] == "bright physis"]:
        matrix = np.array(true[point["body_part"]])
        p = np.array(point["lps_mm"])
        expected = matrix[:3, :3] @ p + matrix[:3, 3]
        out.setdefault(point["body_part"], []).append(float(np.linalg.norm(mapping(p) - expected)))
    return out


def lesion_errors(truth: dict, mapping) -> list[float]:
    """TRE (mm) at the first visit's lesions."""
    true = truth["transforms"][0]["regions"]
    out = []
    for lesion in truth["visits"][0]["lesions"]:
        matrix = np.array(true[lesion["body_part"]])
        p = np.array(lesion["lps_mm"])
        out.append(float(np.linalg.norm(mapping(p) - (matrix[:3, :3] @ p + matrix[:3, 3]))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matrix", type=int, default=128)
    parser.add_argument("--slices", type=int, default=24)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    plan = StudyPlan(stations=5, slices=args.slices, matrix=args.matrix, seed=args.seed, timepoints=2)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        truth = generate_study(root / "study", plan)
        store = Store.open(root / "store")
        import_paths(store, [root / "study"])
        prior = composed_stir(store, truth["visits"][0]["study_uid"])
        current = composed_stir(store, truth["visits"][1]["study_uid"])
        times = RegistrationTimes()
        start = time.perf_counter()
        piecewise = register_piecewise(prior, current, times=times)
        piecewise_s = time.perf_counter() - start
        start = time.perf_counter()
        naive = naive_rigid(prior, current)
        naive_s = time.perf_counter() - start
        store.close()
    pixel = plan.pixel_mm
    print(f"pair: 5 stations x {plan.slices} slices of {plan.matrix} x {plan.matrix} per visit, "
          f"composed STIR {prior.shape} (k, j, i), voxel {pixel:.2f} x {pixel:.2f} x {plan.slice_mm:.2f} mm, seed {plan.seed}")
    print(json.dumps({"lesions": len(truth["visits"][0]["lesions"])}))
    print("\n| step | piecewise s |\n|---|---|")
    for name, seconds in times.seconds.items():
        print(f"| {name} | {seconds:.2f} |")
    print(f"| total (wall) | {piecewise_s:.2f} |")
    print(f"| naive single rigid (wall) | {naive_s:.2f} |")
    print(f"\npiecewise / naive time: {piecewise_s / naive_s:.2f}x")

    def by_piecewise(p):
        return np.array(piecewise.map_point(p).point)

    def by_naive(p):
        return naive[:3, :3] @ p + naive[:3, 3]

    pw, nv = errors_by_part(truth, by_piecewise), errors_by_part(truth, by_naive)
    print("\nTRE (mm) at lesions and growth plates, per body part: median / max (points)\n")
    print("| body part | points | piecewise median | piecewise max | naive median | naive max |\n|---|---|---|---|---|---|")
    for part in sorted(pw):
        a, b = np.array(pw[part]), np.array(nv[part])
        print(f"| {part} | {len(a)} | {np.median(a):.2f} | {a.max():.2f} | {np.median(b):.2f} | {b.max():.2f} |")
    lp, ln = lesion_errors(truth, by_piecewise), lesion_errors(truth, by_naive)
    print(f"\nlesions only: piecewise max {max(lp):.2f} mm, naive max {max(ln):.2f} mm "
          f"(one in-plane voxel = {pixel:.2f} mm); within one voxel: piecewise {sum(e <= pixel for e in lp)}/{len(lp)}, "
          f"naive {sum(e <= pixel for e in ln)}/{len(ln)}")


if __name__ == "__main__":
    main()
