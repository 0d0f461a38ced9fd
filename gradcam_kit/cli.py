"""``gradcam-kit``: the instructor's single entry point.

Its help (:data:`DESCRIPTION`, :data:`EPILOG` and the subcommands' texts) is plain text, as a
terminal shows it: no reStructuredText markup.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from gradcam_kit.course import Course, CourseNotFound
from gradcam_kit.errors import KitError

DESCRIPTION = "The TP2 Grad-CAM course kit: release the student version, grade the submissions."
EPILOG = """\
Every command takes --course DIR; the default is the course that holds the current folder
(the first folder at or above it with an nbgrader_config.py). See README.md for the whole
workflow, and `gradcam-kit COMMAND --help` for each command."""


def _add_course(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--course", metavar="DIR", help="the course folder (default: the enclosing one)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gradcam-kit", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    images = commands.add_parser(
        "images", help="place and check the course images",
        description="Place the 21 course images in TP2_images/, each checked against "
                    "TP2_images/manifest.json. Does nothing when they are all in place.")
    _add_course(images)
    images.add_argument("--from", dest="source", metavar="DIR_OR_ZIP",
                        help="a folder or a TP2_images.zip to copy from (default: download the course archive)")
    images.add_argument("--check", action="store_true", help="only check what is in place; exit 1 if incomplete")

    release = commands.add_parser(
        "release", help="generate release/TP2_GradCAM with nbgrader",
        description="Run nbgrader generate_assignment on source/TP2_GradCAM/ in a scratch folder, check "
                    "the result (exactly the notebook and tp2_utils.py, no solution or hidden-test line), "
                    "then replace release/TP2_GradCAM/ with it. On any failure release/ is left as it was "
                    "and the error says what was refused and what to do.")
    _add_course(release)
    release.add_argument("--bundle", nargs="?", const="", metavar="ZIP",
                         help="also write the students' one-file bundle: the notebook, tp2_utils.py and the "
                              "images, in ZIP (default: dist/TP2_GradCAM.zip)")

    grade = commands.add_parser(
        "grade", help="grade the submissions into nbgrader's gradebook",
        description="Grade submitted/<student>/TP2_GradCAM/TP2_GradCAM.ipynb with the hidden judge, "
                    "student code running in a sandbox, into gradebook.db, grades/TP2_GradCAM.csv, "
                    "feedback pages and autograded/ (for formgrader). A student already graded is "
                    "skipped unless the notebook or what decides the grade (points, tests, answer key, "
                    "judge, weights policy) changed since; the summary says why each one was graded.")
    _add_course(grade)
    grade.add_argument("--student", action="append", metavar="ID", help="grade only this student (repeatable)")
    grade.add_argument("--workers", type=int, default=None, metavar="N",
                       help="parallel judges (default: one per CPU, fewer if memory is short)")
    grade.add_argument("--force", action="store_true",
                       help="regrade students even when nothing changed since they were graded")
    grade.add_argument("--csv", metavar="FILE", help="where to write the CSV (default: grades/TP2_GradCAM.csv)")
    grade.add_argument("--isolation", choices=("bwrap", "uid", "process"), metavar="LEVEL",
                       help="grade at this isolation level (bwrap, uid or process) even if it is weaker than the "
                            "strongest this machine supports; by default grading refuses to start below it")
    grade.add_argument("--no-exploration", dest="exploration", action="store_false",
                       help="do not run the exploration cells (Parts 2-4, bonus) whose figures formgrader "
                            "shows next to the written answers; faster, grades the same")

    demo = commands.add_parser(
        "demo", help="release, then grade sample submissions in a scratch course",
        description="Copy the course into a scratch folder, release it, grade sample submissions (the "
                    "solution, the untouched release, buggy ones) and show their grades.")
    _add_course(demo)
    demo.add_argument("--scratch", metavar="DIR", help="the scratch course folder (default: COURSE/.demo)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        course = Course.locate(args.course)
        if args.command == "images":
            from gradcam_kit.images import run_images

            return run_images(course, source=args.source, check_only=args.check)
        if args.command == "release":
            from gradcam_kit.release import generate_release

            generate_release(course)
            if args.bundle is not None:
                from gradcam_kit.bundle import write_bundle

                print(f"wrote the students' bundle {write_bundle(course, args.bundle or None)}")
            return 0
        if args.command == "grade":
            from gradcam_kit.grading.batch import grade_course

            return grade_course(course, students=args.student, workers=args.workers,
                                force=args.force, csv_path=args.csv, isolation=args.isolation,
                                exploration=args.exploration)
        if args.command == "demo":
            from gradcam_kit.demo import run_demo

            return run_demo(course, scratch=args.scratch)
    except (KitError, CourseNotFound) as error:
        print(f"gradcam-kit {args.command}: {error}", file=sys.stderr)
        return 1
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    raise SystemExit(main())
