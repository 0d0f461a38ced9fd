"""What ``gradcam-kit grade`` writes for people: the CSV, the feedback pages, the histogram.

Every function here takes the judge's results (the JSON of ``autograder_tests --results-json``,
see ``docs/design.md``) and writes one file, atomically (a temporary file, then a rename), so that
an interrupted grading never leaves half a file behind.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from gradcam_kit.grading.feedback import CONVENTION_GLOSSARY

Results = Mapping[str, object]
"""One student's results: the judge's JSON, as a dict."""


def _file_mode() -> int:
    """The mode of a new file under the current umask (``mkstemp`` would make it 0600)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------
def write_atomically(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data.encode("utf-8") if isinstance(data, str) else data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, FILE_MODE)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def number(value: object) -> str:
    """Points for display: 2.0 -> '2', 0.5 -> '0.5'."""
    return f"{float(value):g}"  # type: ignore[arg-type]


def total(results: Results) -> tuple[float, float]:
    """The points earned and the points possible over all tests of ``results``."""
    tests = results.get("tests", {})
    assert isinstance(tests, Mapping)
    earned = sum(float(t.get("points", 0.0)) for t in tests.values())
    possible = sum(float(t.get("max_points", 0.0)) for t in tests.values())
    return earned, possible


# ---------------------------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------------------------
def csv_columns(tests: Sequence[str]) -> list[str]:
    """``student_id``, one column per test, ``autograded_score``, ``autograded_max``, ``isolation``."""
    return ["student_id", *tests, "autograded_score", "autograded_max", "isolation"]


def isolation_cell(results: Results) -> str:
    """The isolation level a student was graded at, e.g. ``bwrap``, or ``process (below bwrap)``
    when the instructor accepted a weaker level than the machine supports."""
    level = str(results.get("isolation") or "")
    policy = results.get("isolation_policy")
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
        student_tests = results[student].get("tests", {})
        assert isinstance(student_tests, Mapping)
        earned, possible = total(results[student])
        cells = [number(student_tests[name]["points"]) if name in student_tests else "" for name in tests]
        writer.writerow([student, *cells, number(earned), number(possible), isolation_cell(results[student])])
    return buffer.getvalue()


def write_csv(path: Path, results: Mapping[str, Results], tests: Sequence[str]) -> None:
    """Write :func:`csv_text` to ``path``."""
    write_atomically(path, csv_text(results, tests))


# ---------------------------------------------------------------------------------------------
# Figures (matplotlib's object API: no pyplot state, no display needed)
# ---------------------------------------------------------------------------------------------
def _png(figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def heatmap_png(npz_path: Path, tp2_utils) -> bytes:
    """The student's heatmap beside the reference one, both over the same image.

    Parameters
    ----------
    npz_path : Path
        The judge's ``heatmap.npz``: ``image`` (3, 224, 224), normalised; ``student`` and
        ``reference`` (224, 224) maps in [0, 1]. A missing ``student`` map is drawn as a blank.
    tp2_utils : module
        The course's helper module (its ``show_cam_on_image`` draws each overlay).

    Raises
    ------
    OSError, ValueError, KeyError
        When the file is missing or malformed.
    """
    import torch
    from matplotlib.figure import Figure

    with np.load(npz_path, allow_pickle=False) as data:
        image = torch.as_tensor(np.asarray(data["image"], dtype=np.float32))
        reference = np.asarray(data["reference"], dtype=np.float32)
        student = np.asarray(data["student"], dtype=np.float32) if "student" in data.files else None
    if image.shape != (3, *reference.shape):
        raise ValueError(f"{npz_path}: image of shape {tuple(image.shape)} for maps of shape {reference.shape}")

    figure = Figure(figsize=(9, 3.4))
    axes = figure.subplots(1, 3)
    blank = torch.zeros(reference.shape)
    tp2_utils.show_cam_on_image(axes[0], image, blank, title="image", alpha=0.0)
    if student is not None and student.shape == reference.shape and np.isfinite(student).all():
        tp2_utils.show_cam_on_image(axes[1], image, torch.as_tensor(student), title="your Grad-CAM")
    else:
        tp2_utils.show_cam_on_image(axes[1], image, blank, title="your Grad-CAM: none", alpha=0.0)
    tp2_utils.show_cam_on_image(axes[2], image, torch.as_tensor(reference), title="reference Grad-CAM")
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
    axis.hist(list(scores), bins=edges, color="#3b75af", edgecolor="white")
    axis.set_xlim(-step, top + step)
    axis.set_xlabel(f"autograded score (out of {number(max_score)})")
    axis.set_ylabel("students")
    axis.yaxis.get_major_locator().set_params(integer=True)
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


def heatmap_case(npz_path: Path, class_names: Sequence[str]) -> HeatmapCase | None:
    """The case of the judge's ``heatmap.npz``, or ``None`` when the file does not say (or is unreadable)."""
    keys = ("arch", "layer", "image_name", "class_idx", "weights")
    try:
        with np.load(npz_path, allow_pickle=False) as data:
            if not all(key in data.files for key in keys):
                return None
            arch, layer, image, weights = (str(data[key][()]) for key in ("arch", "layer", "image_name", "weights"))
            class_idx = int(data["class_idx"][()])
    except (OSError, ValueError, TypeError, KeyError):
        return None
    name = class_names[class_idx] if 0 <= class_idx < len(class_names) else "?"
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
        The PNG of :func:`heatmap_png` (embedded), or ``None`` when there is none.
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
    tests = results.get("tests", {})
    assert isinstance(tests, Mapping)
    earned, possible = total(results)
    rows, texts = [], []
    for name, test in tests.items():
        outcome = str(test.get("outcome", ""))
        feedback = str(test.get("feedback") or ("" if outcome == "passed" else outcome))
        texts.append(feedback)
        css = outcome if outcome in ("passed", "failed", "error") else "failed"
        rows.append(
            f'<tr class="{css}"><td><code>{escape(name)}</code></td><td class="outcome">{escape(outcome)}</td>'
            f'<td class="points">{number(test.get("points", 0))} / {number(test.get("max_points", 0))}</td>'
            f'<td class="feedback">{text_html(feedback)}</td></tr>'
        )
    all_notes = [*map(str, results.get("notes", []) or []), *notes]  # type: ignore[arg-type]
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
    out = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths)).rstrip(), line]
    out += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(out)
