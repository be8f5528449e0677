"""Report figures, drawn with matplotlib's object API (Agg; no pyplot, no GUI).

Every figure is saved as PNG and SVG. The skeleton map is a schematic front
view kept as data (``schemas/skeleton/``, :mod:`cno_annotate.annotation.skeleton`),
one shape per site and side, in radiological convention (the patient's right on
the left). All text is drawn as plain text (no mathtext), so user text such
as reader ids cannot break a figure.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from matplotlib import rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Ellipse, Rectangle
from matplotlib.text import Text

from cno_annotate.annotation.skeleton import Shape, load_skeleton
from cno_annotate.annotation.taxonomy import Taxonomy

CONFIRMED, CLINICAL_ONLY, IMAGING_ONLY = "#3a9d3a", "#2f6fd0", "#f0c020"  # the cohort paper's Fig. 1 colours
CLINICAL, RADIOLOGICAL = "#2f6fd0", "#d0502f"


def new_figure(width: float, height: float) -> Figure:
    """A figure that draws without any GUI backend."""
    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def plain_text(figure: Figure) -> None:
    """Draw every text of the figure as it is written: reader ids and labels are never math text.

    A reader id such as ``$\\foo$`` would otherwise be parsed as mathtext (and fail).
    """
    for text in figure.findobj(Text):
        text.set_parse_math(False)


def save(figure: Figure, folder: Path, name: str) -> dict:
    """Write ``name.png`` and ``name.svg``; return their paths and the PNG as base64 (for HTML)."""
    folder.mkdir(parents=True, exist_ok=True)
    png, svg = folder / f"{name}.png", folder / f"{name}.svg"
    buffer = io.BytesIO()
    plain_text(figure)
    with rc_context({"text.parse_math": False, "text.usetex": False}):  # tick labels are made while drawing
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
    ax.set_xlabel(f"mean total score of {readers[0]} and {readers[1]} (points)")
    ax.set_ylabel(f"{readers[1]} - {readers[0]} (points)")
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
    ax.barh(y + 0.18, [r["clinical_pct"] for r in top], height=0.36, color=CLINICAL, label="clinical (painful sites)")
    ax.barh(y - 0.18, [r["radiological_pct"] for r in top], height=0.36, color=RADIOLOGICAL,
            label="radiological (lesions)")
    ax.set_yticks(y, [r["label"] for r in top])
    ax.set_xlabel("% of painful sites (clinical) or of lesions (radiological)")
    ax.legend(fontsize=8)
    ax.set_title("Distribution by site group: painful sites and lesions")
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
    ax.set_ylabel("total score (points)")
    ax.set_title("Follow-up: total score per patient")
    if result["patients"]:
        ax.legend(fontsize=7, ncols=2)
        ax.set_xticks(sorted({t for p in result["patients"] for t in p["timepoints"]}))
    return figure


# -- the skeleton map -------------------------------------------------------------------------------
def skeleton_figure(values: dict[tuple[str, str | None], float], taxonomy: Taxonomy, title: str,
                    label: str = "lesions") -> Figure:
    """A front-view skeleton; each site shaded by its value (0: grey outline only)."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.ticker import MaxNLocator

    skeleton = load_skeleton()
    missing = skeleton.missing(taxonomy)
    if missing:
        raise ValueError(f"the skeleton map lacks shapes for {missing[:5]}")
    top = max([v for v in values.values() if v], default=1)
    norm = Normalize(0, top)
    cmap = colormaps["YlOrRd"]
    figure = new_figure(4.2, 7.6)
    ax = figure.add_subplot()
    for shape in skeleton.shapes:
        value = values.get((shape.site, shape.side), 0)
        colour = cmap(0.25 + 0.75 * norm(value)) if value else "#e4e4e4"
        edge = "#8a2a0a" if value else "#9a9a9a"
        _draw(ax, shape, colour, edge)
    ax.set_aspect("equal")
    ax.set_xlim(*skeleton.extent_x)
    ax.set_ylim(*skeleton.extent_z)
    ax.axis("off")
    ax.text(-230, 640, "R", fontsize=12, weight="bold")
    ax.text(215, 640, "L", fontsize=12, weight="bold")
    ax.set_title(title, fontsize=10)
    mappable = ScalarMappable(norm=norm, cmap=cmap)
    bar = figure.colorbar(mappable, ax=ax, shrink=0.4, label=label)
    bar.locator = MaxNLocator(integer=True)
    bar.update_ticks()
    return figure


def _draw(ax, shape: Shape, face, edge) -> None:
    if shape.kind == "capsule":
        a, b = np.array(shape.a), np.array(shape.b)
        length = float(np.hypot(*(b - a)))
        angle = float(np.degrees(np.arctan2(b[1] - a[1], b[0] - a[0])))
        ax.add_patch(Ellipse((a + b) / 2, length + shape.width * 0.3, shape.width, angle=angle, facecolor=face,
                             edgecolor=edge, lw=0.6))
    elif shape.kind == "rectangle":
        (x, z), (w, h) = shape.centre, shape.size
        ax.add_patch(Rectangle((x - w / 2, z - h / 2), w, h, facecolor=face, edgecolor=edge, lw=0.6))
    elif shape.kind == "circle":
        ax.add_patch(Circle(shape.centre, shape.radius, facecolor=face, edgecolor=edge, lw=0.6))
    else:  # outline_ellipse: the skull, an outline unless shaded
        ax.add_patch(Ellipse(shape.centre, *shape.size, facecolor="none" if face == "#e4e4e4" else face,
                             edgecolor=edge, lw=0.8))
