"""What ``gradcam-kit grade`` writes for people: the CSV, the feedback pages, the histogram.

Every function here takes the judge's results (:class:`~gradcam_kit.judge_results.JudgeResults`,
or the JSON object of one, as ``gradcam-kit grade`` keeps it) and writes one file, atomically
(:func:`gradcam_kit.fsutil.write_atomically`), so that an interrupted grading never leaves half a
file behind.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from gradcam_kit.fsutil import write_atomically
from gradcam_kit.grading.feedback import CONVENTION_GLOSSARY
from gradcam_kit.judge_results import JudgeResults

__all__ = [
    "HeatmapCase",
    "Results",
    "comparison_png",
    "csv_columns",
    "csv_text",
    "feedback_html",
    "heatmap_case",
    "histogram_png",
    "isolation_cell",
    "number",
    "text_table",
    "total",
    "write_atomically",
    "write_histogram",
]

Results = JudgeResults | Mapping[str, object]
"""One student's results: a :class:`JudgeResults`, or its JSON object (checked when read)."""


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------
def number(value: object) -> str:
    """Points for display: 2.0 -> '2', 0.5 -> '0.5'."""
    return f"{float(value):g}"  # type: ignore[arg-type]


def total(results: Results) -> tuple[float, float]:
    """The points earned and the points possible over all tests of ``results``."""
    return JudgeResults.of(results).total()


# ---------------------------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------------------------
def csv_columns(tests: Sequence[str]) -> list[str]:
    """``student_id``, one column per test, ``autograded_score``, ``autograded_max``, ``isolation``."""
    return ["student_id", *tests, "autograded_score", "autograded_max", "isolation"]


def isolation_cell(results: Results) -> str:
    """The isolation level a student was graded at, e.g. ``bwrap``, or ``process (below bwrap)``
    when the instructor accepted a weaker level than the machine supports."""
    checked = JudgeResults.of(results)
    level = checked.isolation
    policy = checked.extra.get("isolation_policy")
    if isinstance(policy, Mapping) and policy.get("below_strongest"):
        return f"{level} (below {policy.get('strongest')})"
    return level


def csv_text(results: Mapping[str, Results], tests: Sequence[str]) -> str:
    """The CSV of the autograded points, one row per student (sorted by id).

    Parameters
    ----------
    results : Mapping[str, Results]
        The results of each student, by student id.
    tests : Sequence[str]
        The test names, in column order (a test missing from a student's results is left empty).
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(csv_columns(tests))
    for student in sorted(results):
        checked = JudgeResults.of(results[student])
        earned, possible = checked.total()
        cells = [number(checked.tests[name].points) if name in checked.tests else "" for name in tests]
        writer.writerow([student, *cells, number(earned), number(possible), isolation_cell(checked)])
    return buffer.getvalue()


def _png(figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def comparison_png(picture: np.ndarray, reference: np.ndarray, student: np.ndarray | None) -> bytes:
    """The student's heatmap beside the reference one, both over the same picture (no torch needed).

    Each overlay is drawn as ``tp2_utils.show_cam_on_image`` draws it: the picture, then the map
    with the ``jet`` colormap, alpha 0.5, on the fixed range [0, 1].

    Parameters
    ----------
    picture : ndarray, shape (H, W, 3)
        The image as shown, values in [0, 1] (``tp2_utils.denormalize`` of the model's input).
    reference : ndarray, shape (H, W)
        The reference map, in [0, 1].
    student : ndarray, shape (H, W), or None
        The student's map; missing, of another shape or not finite: drawn as none.

    Raises
    ------
    ValueError
        When the picture and the reference map do not have the same size.
    """
    from matplotlib.figure import Figure

    picture = np.asarray(picture, dtype=np.float32)
    reference = np.asarray(reference, dtype=np.float32)
    if picture.shape != (*reference.shape, 3):
        raise ValueError(f"a picture of shape {picture.shape} for maps of shape {reference.shape}")
    usable = student is not None and np.shape(student) == reference.shape and bool(np.isfinite(student).all())
    panels = [("image", None), ("your Grad-CAM" if usable else "your Grad-CAM: none", student if usable else None),
              ("reference Grad-CAM", reference)]
    figure = Figure(figsize=(9, 3.4))
    for axis, (title, heatmap) in zip(figure.subplots(1, 3), panels, strict=True):
        axis.imshow(picture)
        if heatmap is not None:
            axis.imshow(np.asarray(heatmap, dtype=np.float32), cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
        axis.set_title(title)
        axis.axis("off")
    return _png(figure)


def histogram_png(scores: Sequence[float], max_score: float, title: str) -> bytes:
    """A histogram of the autograded scores, one bar per half point from 0 to ``max_score``."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.6))
    axis = figure.subplots()
    top = max(max_score, max(scores, default=0.0), 1.0)
    step = 0.5 if top <= 20 else 1.0
    edges = np.arange(0.0, top + step, step) - step / 2
    edges = np.append(edges, edges[-1] + step)
    axis.hist(list(scores), bins=edges.tolist(), color="#3b75af", edgecolor="white")
    axis.set_xlim(-step, top + step)
    axis.set_xlabel(f"autograded score (out of {number(max_score)})")
    axis.set_ylabel("students")
    axis.yaxis.get_major_locator().set_params(integer=True)  # type: ignore[call-arg]  # a MaxNLocator
    mean = float(np.mean(scores)) if len(scores) else float("nan")
    axis.set_title(f"{title}: {len(scores)} students, mean {mean:.2f}")
    return _png(figure)


def write_histogram(path: Path, results: Mapping[str, Results], title: str) -> None:
    """Write the histogram of the totals of ``results`` to ``path`` (PNG)."""
    totals = [total(r) for r in results.values()]
    max_score = max((possible for _, possible in totals), default=0.0)
    write_atomically(path, histogram_png([earned for earned, _ in totals], max_score, title))


# ---------------------------------------------------------------------------------------------
# Feedback page
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeatmapCase:
    """What the heatmaps of the feedback page are of (from the judge's ``heatmap.npz``).

    Attributes
    ----------
    arch, layer, image : str
        The model (``densenet121``), the layer explained (``features``), the image's file name.
    class_idx : int
    class_name : str
    weights : str
        The weights policy of the models: ``imagenet``, ``random`` or a file.
    """

    arch: str
    layer: str
    image: str
    class_idx: int
    class_name: str
    weights: str


def heatmap_case(npz_path: Path, class_names: Sequence[str] = ()) -> HeatmapCase | None:
    """The case of the judge's ``heatmap.npz``, or ``None`` when the file does not say (or is unreadable).

    The class is named by the file's ``class_name`` (the judge writes it), else by ``class_names``
    (by index), else ``?``.
    """
    keys = ("arch", "layer", "image_name", "class_idx", "weights")
    try:
        with np.load(npz_path, allow_pickle=False) as data:
            if not all(key in data.files for key in keys):
                return None
            arch, layer, image, weights = (str(data[key][()]) for key in ("arch", "layer", "image_name", "weights"))
            class_idx = int(data["class_idx"][()])
            named = str(data["class_name"][()]) if "class_name" in data.files else ""
    except (OSError, ValueError, TypeError, KeyError):
        return None
    name = named or (class_names[class_idx] if 0 <= class_idx < len(class_names) else "?")
    return HeatmapCase(arch, layer, image, class_idx, name, weights)


_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60em; margin: 2em auto; color: #222; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: .4em .6em; text-align: left; vertical-align: top; }
td.points { white-space: nowrap; }
tr.passed td.outcome { color: #1a7f37; } tr.failed td.outcome, tr.error td.outcome { color: #c62828; }
.feedback { white-space: pre-wrap; overflow-wrap: anywhere; }
code { background: #f3f3f3; padding: 0 .2em; border-radius: 3px; }
p.warning { background: #fff4e5; border-left: 4px solid #f0a020; padding: .5em .8em; }
dt { font-weight: bold; margin-top: .5em; }
img { max-width: 100%; }
"""


def text_html(text: str) -> str:
    """Plain feedback text as HTML: escaped, with its Markdown code spans (```x```) set as code.

    A backquote without its pair stays as it is.
    """
    pieces = str(text).split("`")
    if len(pieces) % 2 == 0:  # an odd number of backquotes: keep the last one literally
        pieces[-2:] = [pieces[-2] + "`" + pieces[-1]]
    return "".join(f"<code>{html.escape(piece)}</code>" if index % 2 else html.escape(piece)
                   for index, piece in enumerate(pieces))


def _glossary(texts: Iterable[str]) -> str:
    """Definitions of the conventions that the texts name (none: an empty string)."""
    named = [name for name in CONVENTION_GLOSSARY if any(f"'{name}'" in text or f"`{name}`" in text for text in texts)]
    if not named:
        return ""
    items = "".join(f"<dt><code>{name}</code></dt><dd>{text_html(CONVENTION_GLOSSARY[name])}</dd>" for name in named)
    return ("<h2>Words used above</h2>\n<p>At the output of DenseNet's <code>features</code>, an in-place ReLU "
            "overwrites the tensor that the layer returned, so three pairs of activations and gradient make "
            f"sense (the notebook's Part 1 shows them); all three are accepted.</p>\n<dl>{items}</dl>\n")


def _heatmap_html(heatmap: bytes | None, case: HeatmapCase | None) -> str:
    if not heatmap:
        return "<p>No heatmap could be drawn for this submission.</p>"
    encoded = base64.b64encode(heatmap).decode("ascii")
    if case is not None:
        what = (f"class {case.class_idx} ({html.escape(case.class_name)}) at the layer "
                f"<code>{html.escape(case.layer)}</code> of {html.escape(case.arch)}, on the image "
                f"<code>{html.escape(case.image)}</code>")
    else:
        what = "the same class, layer and image"
    parts = [f'<img alt="your Grad-CAM heatmap beside the reference one, on the same image" '
             f'src="data:image/png;base64,{encoded}">',
             f"<p>Left: the image. Middle: your Grad-CAM. Right: the reference Grad-CAM. Both are the map of "
             f"{what}.</p>"]
    if case is not None and case.weights == "random":
        parts.append('<p class="warning">These maps were computed with seeded random weights '
                     "(<code>GRADCAM_WEIGHTS=random</code>), not ImageNet ones: they check that your code computes "
                     "Grad-CAM, but they show nothing about the image. Do not read anything into their shapes.</p>")
    return "\n".join(parts)


def feedback_html(student: str, assignment: str, results: Results, heatmap: bytes | None,
                  notes: Iterable[str] = (), graded_at: datetime | None = None,
                  heatmap_case: HeatmapCase | None = None) -> str:
    """A self-contained HTML page of one student's autograded results.

    Parameters
    ----------
    student, assignment : str
        Who and what.
    results : Results
        The judge's results: every test with its outcome, points and feedback, and its notes.
    heatmap : bytes, optional
        The judge's ``heatmap.png`` (embedded), or ``None`` when there is none.
    notes : Iterable[str]
        More notes from the grader (e.g. nbgrader's remarks on edited locked cells).
    graded_at : datetime, optional
        When the grading was done.
    heatmap_case : HeatmapCase, optional
        What the heatmap shows (:func:`heatmap_case`), for its caption.

    Feedback and notes are plain text whose Markdown code spans are shown as code; a section
    explains the Grad-CAM conventions that they name; the notes' section is left out when empty.
    """
    escape = html.escape
    checked = JudgeResults.of(results)
    earned, possible = checked.total()
    rows, texts = [], []
    for name, test in checked.tests.items():
        feedback = test.feedback or ("" if test.passed else test.outcome)
        texts.append(feedback)
        rows.append(
            f'<tr class="{test.outcome}"><td><code>{escape(name)}</code></td>'
            f'<td class="outcome">{escape(test.outcome)}</td>'
            f'<td class="points">{number(test.points)} / {number(test.max_points)}</td>'
            f'<td class="feedback">{text_html(feedback)}</td></tr>'
        )
    all_notes = [*checked.notes, *notes]
    texts += all_notes
    notes_html = ("<h2>Notes</h2>\n<ul>" + "".join(f"<li>{text_html(n)}</li>" for n in all_notes) + "</ul>\n"
                  if all_notes else "")
    when = f"<p>Graded on {escape(graded_at.strftime('%Y-%m-%d %H:%M'))}.</p>" if graded_at else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{escape(assignment)}: autograder feedback for {escape(student)}</title>
<style>{_STYLE}</style></head>
<body>
<h1>{escape(assignment)}: autograder feedback</h1>
<p>Student: <strong>{escape(student)}</strong>. Autograded score: <strong>{number(earned)} / {number(possible)}</strong>
(the written answers are graded by hand, separately).</p>
{when}
<h2>Tests</h2>
<table><thead><tr><th>test</th><th>outcome</th><th>points</th><th>feedback</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table>
{_glossary(texts)}{notes_html}<h2>Your heatmap and the reference</h2>
{_heatmap_html(heatmap, heatmap_case)}
</body></html>
"""


# ---------------------------------------------------------------------------------------------
# Console table
# ---------------------------------------------------------------------------------------------
def text_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A plain text table with aligned columns."""
    rows = [list(map(str, row)) for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h)) for i, h in enumerate(header)]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(), line]
    out += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip() for row in rows]
    return "\n".join(out)
