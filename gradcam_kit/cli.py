"""``gradcam-kit``: the instructor's single entry point.

Subcommands
-----------
images   place the course images in ``TP2_images/`` and check them against the manifest
release  generate the student version with nbgrader into ``release/TP2_GradCAM/`` (``--bundle``:
         also one zip for students, with the images)
grade    grade ``submitted/*/TP2_GradCAM/TP2_GradCAM.ipynb`` into nbgrader's gradebook
demo     release, grade a few sample submissions in a scratch course, show the results

Every subcommand takes ``--course DIR``; the default is the course that contains the current
directory (the first folder above it holding ``nbgrader_config.py``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from gradcam_kit.course import Course, CourseNotFound
from gradcam_kit.errors import KitError


def _add_course(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--course", metavar="DIR", help="the course folder (default: the enclosing one)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gradcam-kit", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    images = commands.add_parser("images", help="place and check the course images")
    _add_course(images)
    images.add_argument("--from", dest="source", metavar="DIR_OR_ZIP",
                        help="a folder or a TP2_images.zip to copy from (default: download the course archive)")
    images.add_argument("--check", action="store_true", help="only check what is in place; exit 1 if incomplete")

    release = commands.add_parser("release", help="generate release/TP2_GradCAM with nbgrader")
    _add_course(release)
    release.add_argument("--bundle", nargs="?", const="", metavar="ZIP",
                         help="also write the students' one-file bundle: the notebook, tp2_utils.py and the "
                              "images, in ZIP (default: dist/TP2_GradCAM.zip)")

    grade = commands.add_parser("grade", help="grade the submissions into nbgrader's gradebook")
    _add_course(grade)
    grade.add_argument("--student", action="append", metavar="ID", help="grade only this student (repeatable)")
    grade.add_argument("--workers", type=int, default=None, metavar="N", help="parallel judges (default: one per CPU, fewer if memory is short)")
    grade.add_argument("--force", action="store_true", help="regrade students already graded")
    grade.add_argument("--csv", metavar="FILE", help="where to write the CSV (default: grades/TP2_GradCAM.csv)")

    demo = commands.add_parser("demo", help="release, then grade sample submissions in a scratch course")
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
                                force=args.force, csv_path=args.csv)
        if args.command == "demo":
            from gradcam_kit.demo import run_demo

            return run_demo(course, scratch=args.scratch)
    except (KitError, CourseNotFound) as error:
        print(f"gradcam-kit {args.command}: {error}", file=sys.stderr)
        return 1
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    raise SystemExit(main())
