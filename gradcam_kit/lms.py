"""Collecting submissions downloaded from an LMS (``nbgrader zip_collect``), with the course's student ids.

An LMS names each downloaded file after the student in its own terms; Moodle, for instance, writes
``Jane Doe_1234567_assignsubmission_file_/TP2_GradCAM.ipynb`` ("Download submissions in folders",
the default) or ``Jane Doe_1234567_assignsubmission_file_TP2_GradCAM.ipynb``, where ``1234567`` is
the participant number of the assignment. nbgrader's ``FileNameCollectorPlugin`` reads such a name
with ``FileNameCollectorPlugin.named_regexp`` (set in ``nbgrader_config.py``, with the patterns of
other LMSs beside it); its ``student_id`` group is the LMS's id.

:class:`RosterCollector` (``ZipCollectApp.collector_plugin`` in ``nbgrader_config.py``) then maps
that id to the course's student id with a roster, ``lms_roster.csv`` in the course folder (it holds
names: git ignores it)::

    lms_id,student_id
    1234567,jdoe
    Participant 7654321,asmith

``lms_id`` is what the regexp's ``student_id`` group captures (for Moodle the participant number;
the "Identifier" column of Moodle's grading worksheet, ``Participant 1234567``, is accepted as
is). A file whose id is not in the roster is skipped with a warning that names the file, the name
the LMS gave and the line to add, never filed under a wrong id. Without a roster file the ids are
used as captured (a warning says so once).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Optional

from nbgrader.plugins import FileNameCollectorPlugin
from traitlets import Unicode

__all__ = ["RosterCollector", "RosterError", "read_roster"]

_PARTICIPANT = re.compile(r"^participant\s*", re.IGNORECASE)
_STUDENT_ID = re.compile(r"^[A-Za-z0-9_.@+-]+$")


class RosterError(ValueError):
    """The roster cannot be used; the message names the file and the problem."""


def normalise_lms_id(value: str) -> str:
    """``" Participant 1234567 "`` -> ``"1234567"``; other ids are only stripped."""
    return _PARTICIPANT.sub("", value.strip()).strip()


def read_roster(path: Path) -> dict[str, str]:
    """``lms_id -> student_id`` from the CSV at ``path`` (columns ``lms_id`` and ``student_id``).

    Raises
    ------
    RosterError
        When a column is missing, a student id is not a plain folder name, or one LMS id is given
        two different student ids.
    """
    with path.open(newline="", encoding="utf-8-sig") as stream:
        reader = csv.DictReader(stream)
        missing = {"lms_id", "student_id"} - set(reader.fieldnames or [])
        if missing:
            raise RosterError(f"{path}: no column {', '.join(sorted(missing))} (the first line must name "
                              "the columns: lms_id,student_id)")
        roster: dict[str, str] = {}
        for number, row in enumerate(reader, start=2):
            lms_id, student = normalise_lms_id(row["lms_id"] or ""), (row["student_id"] or "").strip()
            if not lms_id and not student:
                continue
            if not _STUDENT_ID.match(student):
                raise RosterError(f"{path}, line {number}: {student!r} is not a usable student id "
                                  "(letters, digits and . _ - @ + only)")
            if roster.get(lms_id, student) != student:
                raise RosterError(f"{path}, line {number}: {lms_id!r} is given two student ids "
                                  f"({roster[lms_id]!r} and {student!r})")
            roster[lms_id] = student
    return roster


class RosterCollector(FileNameCollectorPlugin):
    """nbgrader's file-name collector, with the LMS's ids mapped to the course's (module docstring)."""

    roster = Unicode(
        "lms_roster.csv",
        help="A CSV (columns lms_id, student_id) mapping the LMS's ids to the course's student ids; "
             "relative to the course root. Empty, or no such file: the ids are used as captured.",
    ).tag(config=True)

    _mapping: dict[str, str] | None = None
    _loaded = False

    def _roster_path(self) -> Path | None:
        if not self.roster:
            return None
        path = Path(self.roster)
        coursedir = getattr(self.parent, "coursedir", None)
        if not path.is_absolute() and coursedir is not None:
            path = Path(coursedir.root) / path
        return path

    def _load(self) -> dict[str, str] | None:
        if not self._loaded:
            self._loaded = True
            path = self._roster_path()
            if path is None or not path.is_file():
                self.log.warning("No roster (%s): the ids found in the file names are used as student ids.",
                                 path if path is not None else "RosterCollector.roster is empty")
            else:
                self._mapping = read_roster(path)
        return self._mapping

    def collect(self, submitted_file: str) -> Optional[dict]:
        info = super().collect(submitted_file)
        if not info:
            return None
        roster = self._load()
        found = normalise_lms_id(str(info.get("student_id", "")))
        who = f"{found!r}" + (f" ({info['lms_name']})" if info.get("lms_name") else "")
        student = found if roster is None else roster.get(found)
        if student is None:
            self.log.warning("Skipped %s: the LMS id %s is not in %s; add the line `%s,<student id>`.",
                             submitted_file, who, self._roster_path(), found)
            return None
        if not _STUDENT_ID.match(student):
            self.log.warning("Skipped %s: %s is not a usable student id; map it in a roster (%s).",
                             submitted_file, who, self.roster)
            return None
        info["student_id"] = student
        return info
