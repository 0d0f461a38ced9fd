"""Which isolation level ``gradcam-kit grade`` grades at: never a weaker one than this machine is set
up for, unless the instructor asks for it.

The strongest level a machine supports (:func:`~gradcam_kit.grading.sandbox.supported_isolation`)
follows from what is installed: ``bwrap`` when bubblewrap is, else ``uid`` for root, else
``process``. Every level is then tried for real (:func:`~gradcam_kit.grading.sandbox.probe_isolation`).
When the strongest supported level does not work, grading stops before it starts, with an error
that names the level, what failed and how to fix it (:class:`IsolationRefused`); ``--isolation
LEVEL`` accepts a weaker level that works, and that choice is recorded in every student's results,
in the CSV and in the feedback's notes. The chosen level is handed to the judges
(``$GRADCAM_ISOLATION``), whose sessions then use exactly that level or fail as a grader fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from gradcam_kit.errors import KitError
from gradcam_kit.grading.sandbox import ISOLATION_LEVELS, probe_isolation, supported_isolation

__all__ = ["IsolationChoice", "IsolationRefused", "choose_isolation"]

_FIXES = {
    "bwrap": ("bubblewrap is installed but cannot start a sandbox here. Usual causes: unprivileged user "
              "namespaces are disabled (as root this does not matter; otherwise `sysctl "
              "kernel.unprivileged_userns_clone=1` or `sysctl user.max_user_namespaces=15000`), a container "
              "that forbids namespaces, or libseccomp2 missing (`apt-get install libseccomp2`)."),
    "uid": ("Only root can run workers as uids of their own, and the interpreter and its virtual environment must "
            "be readable by other users (not under a folder of mode 0700 such as /root). Or install bubblewrap "
            "(`apt-get install bubblewrap`) for the stronger bwrap level."),
}


class IsolationRefused(KitError):
    """The strongest isolation level this machine supports does not work, and no weaker one was accepted."""


@dataclass(frozen=True)
class IsolationChoice:
    """The level a grading run uses, and what it was chosen against.

    Attributes
    ----------
    level : str
        The level every worker of this run uses.
    strongest : str
        The strongest level this machine supports.
    requested : str or None
        What ``--isolation`` asked for (``None``: the default, the strongest).
    reasons : dict
        Level -> why it does not work here (``None``: it works).
    """

    level: str
    strongest: str
    requested: str | None
    reasons: Mapping[str, str | None]

    @property
    def below_strongest(self) -> bool:
        return ISOLATION_LEVELS.index(self.level) > ISOLATION_LEVELS.index(self.strongest)

    def describe(self) -> str:
        """One line for the terminal, before grading and in the summary."""
        if self.below_strongest:
            return (f"isolation level: {self.level}, below the strongest this machine supports ({self.strongest}: "
                    f"{self.reasons.get(self.strongest) or 'not used'}), as asked with --isolation {self.level}")
        stronger = [level for level in ISOLATION_LEVELS[:ISOLATION_LEVELS.index(self.level)]]
        missing = f" ({stronger[0]}: {self.reasons.get(stronger[0])})" if stronger else ""
        return f"isolation level: {self.level}, the strongest this machine supports{missing}"

    def note(self) -> str:
        """The note kept in a student's results and feedback when the level is below the strongest."""
        return (f"Graded at the isolation level `{self.level}`, below the strongest this machine supports "
                f"(`{self.strongest}`), as the instructor asked (--isolation {self.level}).")

    def to_plain(self) -> dict[str, Any]:
        return {"level": self.level, "strongest": self.strongest, "requested": self.requested,
                "below_strongest": self.below_strongest}


def choose_isolation(requested: str | None = None) -> IsolationChoice:
    """The level to grade at.

    Parameters
    ----------
    requested : str, optional
        ``--isolation``: a level to use even if weaker than the strongest supported (it must work).

    Raises
    ------
    KitError
        ``requested`` is not a level, or does not work here.
    IsolationRefused
        Nothing was requested and the strongest level supported here does not work.
    """
    reasons = dict(probe_isolation())
    strongest = supported_isolation()
    if requested is not None:
        if requested not in ISOLATION_LEVELS:
            raise KitError(f"--isolation {requested}: not an isolation level (choose from {', '.join(ISOLATION_LEVELS)})")
        if reasons.get(requested) is not None:
            raise KitError(f"--isolation {requested}: that level does not work here: {reasons[requested]}. "
                           f"{_FIXES.get(requested, '')}".strip())
        return IsolationChoice(requested, strongest, requested, reasons)
    if reasons.get(strongest) is None:
        return IsolationChoice(strongest, strongest, None, reasons)
    working = next(level for level in ISOLATION_LEVELS if reasons.get(level) is None)
    raise IsolationRefused(
        f"refusing to grade below the strongest isolation level this machine supports, `{strongest}`: "
        f"{reasons[strongest]}. {_FIXES.get(strongest, '')} To grade at the weaker level that works here, "
        f"`{working}`, say so: --isolation {working} (it is then recorded in every student's results).")
