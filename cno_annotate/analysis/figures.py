"""Report figures, drawn with matplotlib's object API (Agg; no pyplot, no GUI).

Every figure is saved as PNG and SVG. The skeleton map is a schematic front
view built from the sample phantom's anatomy (``cno_annotate.phantom``), one
shape per site and side, in radiological convention (the patient's right on
the left).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Ellipse, Rectangle

from cno_annotate import phantom
from cno_annotate.annotation.taxonomy import Taxonomy

CONFIRMED, CLINICAL_ONLY, IMAGING_ONLY = "#3a9d3a", "#2f6fd0", "#f0c020"  # the cohort paper's Fig. 1 colours
CLINICAL, RADIOLOGICAL = "#2f6fd0", "#d0502f"


def new_figure(width: float, height: float) -> Figure:
    """A figure that draws without any GUI backend."""
    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save(figure: Figure, folder: Path, name: str) -> dict:
    """Write ``name.png`` and ``name.svg``; return their paths and the PNG as base64 (for HTML)."""
    folder.mkdir(parents=True, exist_ok=True)
    png, svg = folder / f"{name}.png", folder / f"{name}.svg"
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    png.write_bytes(buffer.getvalue())
    figure.savefig(svg, format="svg")
    return {"png": str(png), "svg": str(svg), "png_base64": base64.b64encode(buffer.getvalue()).decode("ascii")}


def bland_altman_figure(a: np.ndarray, b: np.ndarray, readers: list[str], stats: dict) -> Figure:
    """Difference against mean of two readers' patient totals, with bias and limits of agreement."""
    figure = new_figure(5.5, 4.0)
    ax = figure.add_subplot()
    a, b = np.asarray(a, float), np.asarray(b, float)
    keep = ~(np.isnan(a) | np.isnan(b))
    ax.scatter((a[keep] + b[keep]) / 2, b[keep] - a[keep], color="#333333", s=22)
    for value, style, text in ((stats["bias"], "-", "bias"), (stats["lower"], "--", "-1.96 SD"),
                               (stats["upper"], "--", "+1.96 SD")):
        if np.isfinite(value):
            ax.axhline(value, color="#c03030", linestyle=style, linewidth=1)
            ax.annotate(f"{text} {value:.2f}", (1.0, value), xycoords=("axes fraction", "data"), ha="right",
                        va="bottom", fontsize=8, color="#c03030")
    ax.set_xlabel(f"mean total score of {readers[0]} and {readers[1]}")
    ax.set_ylabel(f"{readers[1]} - {readers[0]}")
    ax.set_title("Bland-Altman: patient totals")
    return figure


def concordance_figure(result: dict, basis: str = "cumulative") -> Figure:
    """Painful sites and imaging lesions per site group, in the colours of the cohort paper's Fig. 1.

    Two bars per group, never merged: painful sites (confirmed on imaging,
    clinical only) and imaging lesions (in a painful site, subclinical).
    """
    summary = result[basis]
    top = [g for g in summary["groups"] if g["parent"] is None]
    t = summary["totals"]
    labels = [g["label"] for g in top] + ["All"]
    rows = [g for g in top] + [t]
    figure = new_figure(7.0, 0.5 * max(len(rows), 4) + 1.6)
    ax = figure.add_subplot()
    y = np.arange(len(rows))[::-1].astype(float)
    bars = ((0.2, (("sites_confirmed", "painful sites confirmed on imaging", CONFIRMED),
                   ("sites_clinical_only", "painful sites, clinical only", CLINICAL_ONLY))),
            (-0.2, (("lesions_in_painful_sites", "lesions in a painful site", "#8fcf8f"),
                    ("lesions_subclinical", "lesions, subclinical", IMAGING_ONLY))))
    for offset, parts in bars:
        left = np.zeros(len(rows))
        for key, name, colour in parts:
            values = np.array([r[key] for r in rows], float)
            ax.barh(y + offset, values, left=left, color=colour, label=name, height=0.38)
            left += values
    ax.set_yticks(y, labels)
    ax.set_xlabel("count (upper bar: painful sites; lower bar: imaging lesions)")
    figure.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    when = "cumulative over each patient's timepoints" if basis == "cumulative" else "per timepoint"
    ax.set_title(f"Painful sites and imaging lesions ({when})", fontsize=10)
    return figure


def distribution_figure(result: dict) -> Figure:
    """Percentage of lesions per site group, clinical and radiological side by side."""
    top = [r for r in result["rows"] if r["parent"] is None and (r["clinical_n"] or r["radiological_n"])]
    figure = new_figure(6.5, 0.32 * max(len(top), 4) + 1.2)
    ax = figure.add_subplot()
    y = np.arange(len(top))[::-1]
    ax.barh(y + 0.18, [r["clinical_pct"] for r in top], height=0.36, color=CLINICAL, label="clinical")
    ax.barh(y - 0.18, [r["radiological_pct"] for r in top], height=0.36, color=RADIOLOGICAL, label="radiological")
    ax.set_yticks(y, [r["label"] for r in top])
    ax.set_xlabel("% of lesions")
    ax.legend(fontsize=8)
    ax.set_title("Distribution of lesions by site")
    return figure


def followup_figure(result: dict) -> Figure:
    """Total score per patient over timepoints."""
    figure = new_figure(5.5, 4.0)
    ax = figure.add_subplot()
    if not result["patients"]:
        ax.text(0.5, 0.5, "No patient has more than one timepoint", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return figure
    for patient in result["patients"]:
        ax.plot(patient["timepoints"], patient["totals"], marker="o", label=patient["patient"])
    ax.set_xlabel("timepoint")
    ax.set_ylabel("total score")
    ax.set_title("Follow-up: total score per patient")
    if result["patients"]:
        ax.legend(fontsize=7, ncols=2)
        ax.set_xticks(sorted({t for p in result["patients"] for t in p["timepoints"]}))
    return figure


# -- the skeleton map -------------------------------------------------------------------------------
def _x(side: str | None, x: float) -> float:
    return phantom.side_x(side, x) if side else x


def site_shapes(taxonomy: Taxonomy) -> dict[tuple[str, str | None], tuple]:
    """(site id, side) -> a shape in the coronal plane (LPS x, z in mm)."""
    shapes: dict[tuple[str, str | None], tuple] = {}
    # The sternum first, so the thoracic vertebrae are drawn over it and stay visible.
    shapes[("sternum.manubrium", None)] = ("rect", (0.0, 362.0), 22.0, 40.0)
    shapes[("sternum.body", None)] = ("rect", (0.0, 300.0), 18.0, 80.0)
    shapes[("sternum.xiphoid", None)] = ("rect", (0.0, 250.0), 10.0, 18.0)
    for name, centre_height_radius in phantom.vertebra_centres().items():
        centre, height, radius = centre_height_radius
        shapes[(f"spine.{name}", None)] = ("rect", (0.0, centre[2]), 2 * radius, height - 3)
    shapes[("sacrum", None)] = ("rect", (0.0, -50.0), 44.0, 80.0)
    shapes[("coccyx", None)] = ("rect", (0.0, -105.0), 14.0, 16.0)
    shapes[("skull", None)] = ("ellipse", (0.0, 560.0), 150.0, 190.0)
    for side in "RL":
        for bone, prox, dist, radius in phantom.LONG_BONES:
            p = np.array([_x(side, prox[0]), prox[2]])
            d = np.array([_x(side, dist[0]), dist[2]])
            cut1, cut2 = p + (d - p) * 0.25, p + (d - p) * 0.75
            shapes[(f"{bone}.proximal", side)] = ("line", p, cut1, 2 * radius)
            shapes[(f"{bone}.shaft", side)] = ("line", cut1, cut2, 2 * radius)
            shapes[(f"{bone}.distal", side)] = ("line", cut2, d, 2 * radius)
        medial, lateral = np.array([_x(side, 18), 385.0]), np.array([_x(side, 130), 402.0])
        shapes[("clavicle.medial", side)] = ("line", medial, medial + (lateral - medial) / 3, 15.0)
        shapes[("clavicle.shaft", side)] = ("line", medial + (lateral - medial) / 3, medial + 2 * (lateral - medial) / 3, 15.0)
        shapes[("clavicle.lateral", side)] = ("line", medial + 2 * (lateral - medial) / 3, lateral, 15.0)
        shapes[("sternoclavicular_joint", side)] = ("circle", (_x(side, 12), 383.0), 9.0)
        shapes[("mandible", side)] = ("line", np.array([_x(side, 40), 470.0]), np.array([_x(side, 4), 452.0]), 14.0)
        shapes[("maxilla", side)] = ("circle", (_x(side, 25), 500.0), 14.0)
        shapes[("scapula.body", side)] = ("line", np.array([_x(side, 100), 375.0]), np.array([_x(side, 95), 295.0]), 30.0)
        shapes[("scapula.glenoid", side)] = ("circle", (_x(side, 128), 372.0), 10.0)
        shapes[("scapula.acromion", side)] = ("circle", (_x(side, 135), 398.0), 9.0)
        shapes[("scapula.coracoid", side)] = ("circle", (_x(side, 112), 385.0), 7.0)
        for n, (_, (centre, _h, _r)) in enumerate(list(phantom.vertebra_centres().items())[7:19], start=1):
            z = centre[2]
            shapes[(f"rib.{n}", side)] = ("line", np.array([_x(side, 22), z]), np.array([_x(side, 60 + 4 * min(n, 8)), z - 28]), 7.0)
        shapes[("ilium", side)] = ("line", np.array([_x(side, 62), 30.0]), np.array([_x(side, 95), -60.0]), 40.0)
        shapes[("sacroiliac_joint", side)] = ("line", np.array([_x(side, 26), -15.0]), np.array([_x(side, 34), -70.0]), 8.0)
        shapes[("acetabulum", side)] = ("circle", (_x(side, 88), -85.0), 17.0)
        shapes[("pubis", side)] = ("line", np.array([_x(side, 80), -95.0]), np.array([_x(side, 18), -118.0]), 18.0)
        shapes[("ischium", side)] = ("line", np.array([_x(side, 80), -100.0]), np.array([_x(side, 62), -140.0]), 22.0)
        shapes[("patella", side)] = ("circle", (_x(side, 76), -448.0), 13.0)
        shapes[("carpals", side)] = ("circle", (_x(side, 193), -112.0), 12.0)
        shapes[("metacarpals", side)] = ("line", np.array([_x(side, 194), -124.0]), np.array([_x(side, 197), -150.0]), 20.0)
        shapes[("hand_phalanges", side)] = ("line", np.array([_x(side, 197), -154.0]), np.array([_x(side, 199), -185.0]), 16.0)
        shapes[("talus", side)] = ("circle", (_x(side, 70), -818.0), 12.0)
        shapes[("calcaneus", side)] = ("circle", (_x(side, 72), -848.0), 15.0)
        shapes[("navicular", side)] = ("circle", (_x(side, 58), -836.0), 7.0)
        shapes[("cuboid", side)] = ("circle", (_x(side, 86), -840.0), 7.0)
        shapes[("cuneiforms", side)] = ("circle", (_x(side, 58), -852.0), 7.0)
        shapes[("metatarsals", side)] = ("line", np.array([_x(side, 68), -862.0]), np.array([_x(side, 68), -890.0]), 22.0)
        shapes[("toe_phalanges", side)] = ("line", np.array([_x(side, 68), -894.0]), np.array([_x(side, 68), -912.0]), 18.0)
    missing = [(s.id, side) for s in taxonomy.sites.values()
               for side in (("R", "L") if s.lateral else (None,)) if (s.id, side) not in shapes]
    if missing:
        raise ValueError(f"the skeleton map lacks shapes for {missing[:5]}")
    return shapes


def skeleton_figure(values: dict[tuple[str, str | None], float], taxonomy: Taxonomy, title: str,
                    label: str = "lesions") -> Figure:
    """A front-view skeleton; each site shaded by its value (0: grey outline only)."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.ticker import MaxNLocator

    shapes = site_shapes(taxonomy)
    top = max([v for v in values.values() if v], default=1)
    norm = Normalize(0, top)
    cmap = colormaps["YlOrRd"]
    figure = new_figure(4.2, 7.6)
    ax = figure.add_subplot()
    for key, shape in shapes.items():
        value = values.get(key, 0)
        colour = cmap(0.25 + 0.75 * norm(value)) if value else "#e4e4e4"
        edge = "#8a2a0a" if value else "#9a9a9a"
        _draw(ax, shape, colour, edge)
    ax.set_aspect("equal")
    ax.set_xlim(-240, 240)
    ax.set_ylim(-930, 670)
    ax.axis("off")
    ax.text(-230, 640, "R", fontsize=12, weight="bold")
    ax.text(215, 640, "L", fontsize=12, weight="bold")
    ax.set_title(title, fontsize=10)
    mappable = ScalarMappable(norm=norm, cmap=cmap)
    bar = figure.colorbar(mappable, ax=ax, shrink=0.4, label=label)
    bar.locator = MaxNLocator(integer=True)
    bar.update_ticks()
    return figure


def _draw(ax, shape: tuple, face, edge) -> None:
    kind = shape[0]
    if kind == "line":
        _, a, b, width = shape
        length = float(np.hypot(*(b - a)))
        angle = float(np.degrees(np.arctan2(b[1] - a[1], b[0] - a[0])))
        centre = (a + b) / 2
        ax.add_patch(Ellipse(centre, length + width * 0.3, width, angle=angle, facecolor=face, edgecolor=edge, lw=0.6))
    elif kind == "rect":
        _, (x, z), w, h = shape
        ax.add_patch(Rectangle((x - w / 2, z - h / 2), w, h, facecolor=face, edgecolor=edge, lw=0.6))
    elif kind == "circle":
        _, (x, z), r = shape
        ax.add_patch(Circle((x, z), r, facecolor=face, edgecolor=edge, lw=0.6))
    else:
        _, (x, z), w, h = shape
        ax.add_patch(Ellipse((x, z), w, h, facecolor="none" if face == "#e4e4e4" else face, edgecolor=edge, lw=0.8))
