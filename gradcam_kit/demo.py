"""``gradcam-kit demo``: the whole grading loop on sample submissions, in a scratch course.

1. *release*: copy the course (``nbgrader_config.py``, ``source/``, ``solutions/``,
   ``autograder_tests/``, ``TP2_images/``) into the scratch folder (default ``<course>/.demo/``)
   and generate the release there with nbgrader;
2. *submissions*: place sample submissions in its ``submitted/``: the solution, the untouched
   release, and a few buggy ones (from :mod:`gradcam_kit.grading.samples`);
3. *grading*: grade them with :func:`gradcam_kit.grading.batch.grade_course`, as
   ``gradcam-kit grade`` would;
4. *results*: the table of scores, and where the feedback pages, the CSV and the histogram are.

It works offline: when ``GRADCAM_WEIGHTS`` is not set and torchvision's ImageNet weights are not
in its cache, the demo uses the seeded random weights (``GRADCAM_WEIGHTS=random``) and says so.
The heatmaps then mean nothing, but the grading is the same.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, TextIO

from gradcam_kit.contract import WEIGHTS_ENV
from gradcam_kit.course import ASSIGNMENT, CONFIG_FILE, Course, GradesFolder
from gradcam_kit.errors import KitError

if TYPE_CHECKING:
    from gradcam_kit.grading.samples import Sample

DEMO_MARK = ".gradcam-kit-demo"
COPIED = (CONFIG_FILE, "source", "solutions", "autograder_tests", "TP2_images")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints", ".pytest_cache")
#: Buggy samples: the first mutation of each of these functions (so that the demo shows several
#: different tests failing, whatever the corpus holds).
BUGGY_FUNCTIONS = ("weighted_cam", "upsample_normalize", "grad_cam")
#: The models whose ImageNet weights the judge may load.
ARCHITECTURES = ("densenet121", "resnet18")


def prepare_scratch(scratch: Path) -> None:
    """Make ``scratch`` an empty folder, removing only a previous demo course.

    Raises
    ------
    KitError
        When ``scratch`` holds files that are not from a demo.
    """
    if scratch.exists():
        if (scratch / DEMO_MARK).is_file():
            shutil.rmtree(scratch)
        elif not scratch.is_dir() or any(scratch.iterdir()):
            raise KitError(f"{scratch} exists and is not a demo course: choose another --scratch folder")
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / DEMO_MARK).write_text("A scratch course made by `gradcam-kit demo`; it is replaced at each run.\n")


def copy_course(course: Course, scratch: Path) -> Course:
    """Copy what a grading course needs from ``course`` into ``scratch``."""
    for name in COPIED:
        source = course.root / name
        if not source.exists():
            raise KitError(f"{source} is missing: the demo needs it")
        if source.is_dir():
            shutil.copytree(source, scratch / name, ignore=IGNORED)
        else:
            shutil.copy2(source, scratch / name)
    return Course.locate(scratch)


def choose_weights(course: Course) -> tuple[str, str]:
    """The weights policy for the demo, and a sentence that explains it.

    Raises
    ------
    KitError
        When ImageNet weights are asked for explicitly but are not cached (the demo is offline).
    """
    chosen = os.environ.get(WEIGHTS_ENV, "").strip()
    files = [course.tp2_utils.imagenet_weights_file(arch) for arch in ARCHITECTURES]
    missing = [str(path) for path in files if not path.is_file()]
    if not chosen:
        if not missing:
            return "imagenet", f"{WEIGHTS_ENV} is not set: using the ImageNet weights cached in {files[0].parent}."
        return "random", (
            f"{WEIGHTS_ENV} is not set and the ImageNet weights are not cached ({', '.join(missing)} missing), "
            f"so the demo uses {WEIGHTS_ENV}=random: seeded random weights. The heatmaps and predictions "
            "mean nothing, but the grading works exactly the same."
        )
    if chosen == "imagenet" and missing:
        raise KitError(
            f"{WEIGHTS_ENV}=imagenet but {', '.join(missing)} is missing and the demo works offline: run once "
            f"with internet access to cache the weights, or run `{WEIGHTS_ENV}=random gradcam-kit demo`."
        )
    note = " (seeded random weights: the heatmaps mean nothing)" if chosen == "random" else ""
    return chosen, f"{WEIGHTS_ENV}={chosen}{note}."


def demo_submissions(course: Course, buggy: int = len(BUGGY_FUNCTIONS)) -> dict[str, Sample]:
    """The sample notebooks to grade, by student id: solution, untouched release, ``buggy`` bugs."""
    from gradcam_kit.grading.sample_mutations import MUTATIONS
    from gradcam_kit.grading.samples import build_samples

    picked = []
    for function in BUGGY_FUNCTIONS[:buggy]:
        mutation = next((m for m in MUTATIONS if m.function == function), None)
        if mutation is not None:
            picked.append(mutation.name)
    samples = build_samples(course, names=["solution", "release", *picked])
    students = {"solution": samples["solution"], "untouched_release": samples["release"]}
    students.update({f"bug_{name}": samples[name] for name in picked})
    return students


def place_submissions(course: Course, samples: dict[str, Sample]) -> None:
    """Write each sample as ``submitted/<student>/TP2_GradCAM/TP2_GradCAM.ipynb``."""
    import nbformat

    for student, sample in samples.items():
        path = course.submission(student)
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(sample.notebook, str(path))


@contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    """Set an environment variable for the duration (the judges inherit it)."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def run_demo(course: Course, scratch: str | Path | None = None, *, out: TextIO | None = None,
             workers: int | None = None, buggy: int = len(BUGGY_FUNCTIONS)) -> int:
    """Release, submit samples, grade, and show the results, in a scratch course.

    Parameters
    ----------
    course : Course
        The course to copy.
    scratch : str or Path, optional
        The scratch course folder (default: ``<course>/.demo``); replaced if it holds a previous demo.
    out : TextIO, optional
        Where to write (default: standard output).
    workers : int, optional
        Parallel judges (default: the CPU count).
    buggy : int
        How many buggy submissions (each with a bug in a different function).

    Returns
    -------
    int
        The exit status of the grading (0 when every sample was graded).
    """
    from gradcam_kit.grading.batch import grade_course
    from gradcam_kit.host.isolation import available_isolation
    from gradcam_kit.release import generate_release

    out = out if out is not None else sys.stdout
    folder = Path(scratch).resolve() if scratch is not None else course.root / ".demo"
    started = time.monotonic()

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    policy, explanation = choose_weights(course)
    say(f"gradcam-kit demo: a scratch course in {folder}")
    say(f"Weights: {explanation}")

    with _environment(WEIGHTS_ENV, policy):
        say(f"\n[1/4] Release: copying the course and running nbgrader generate_assignment {ASSIGNMENT}")
        prepare_scratch(folder)
        demo = copy_course(course, folder)
        generate_release(demo)

        say("\n[2/4] Sample submissions:")
        samples = demo_submissions(demo, buggy)
        place_submissions(demo, samples)
        for student, sample in samples.items():
            say(f"  {student:<28} {sample.description}")

        say(f"\n[3/4] Grading {len(samples)} submissions (gradcam-kit grade --course {folder})")
        # the kit's own samples: graded at the strongest level that works here, and it says which
        status = grade_course(demo, workers=workers, force=True, out=out, show_paths=False,
                              isolation=available_isolation()[0], exploration=False)

    grades = GradesFolder(demo.grades_dir)
    example = next((s for s in samples if s.startswith("bug_")), "solution")
    say("\n[4/4] Where to look:")
    say(f"  feedback pages (tests, feedback, heatmap vs reference): {grades.feedback('<student>')}, "
        f"e.g. {grades.feedback(example)}")
    say(f"  histogram of the scores: {grades.histogram}")
    say(f"  CSV of the points: {grades.csv}")
    say(f"  nbgrader's gradebook: cd {folder} && nbgrader export   (or nbgrader formgrader)")
    say(f"Weights: {explanation}")
    say(f"Done in {time.monotonic() - started:.0f} s.")
    return status
