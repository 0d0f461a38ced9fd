"""The judge's reference arrays on disk, shared by judges running side by side.

A folder (``--reference-cache`` or ``$GRADCAM_REFERENCE_CACHE``) holds one ``.npz`` per entry,
named by a hash of the entry's key and of :func:`fingerprint`: everything that reference values
depend on besides their case (the answer key, the reference, the model builders, the helper
module, the weights policy and file, the images, torch's version). A change to any of them
makes new names, so an entry is never read under other conditions than it was written.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from gradcam_kit.contract import weights_policy
from gradcam_kit.course import Course
from gradcam_kit.fsutil import write_atomically

from ._inputs import CATS, SECOND_DOG, WOMAN_DOG

__all__ = ["DiskCache", "fingerprint"]


class DiskCache:
    """Reference arrays in ``folder``, one ``.npz`` per entry, keyed by ``fingerprint`` and the key.

    Entries are written atomically (temporary file, then rename), so judges running side by side
    may share the folder; a damaged entry is recomputed.

    Parameters
    ----------
    folder : Path
        Created if missing.
    fingerprint : str
        What every entry depends on besides its key (:func:`fingerprint`).

    Notes
    -----
    A key is a tuple of plain values (strings, ints, frozen dataclasses of them such as
    ``ModelSpec``, ``ImageRef`` and ``Case``). The file's name hashes the key's ``repr``, which is
    the same in every process and names every field: keys that differ in any field (an image at
    another size, say) have different files.
    """

    def __init__(self, folder: Path, fingerprint: str) -> None:
        self.folder = folder
        self.fingerprint = fingerprint
        folder.mkdir(parents=True, exist_ok=True)

    def _path(self, key: tuple) -> Path:
        digest = hashlib.sha256(f"{self.fingerprint}|{key!r}".encode()).hexdigest()
        return self.folder / f"{digest[:40]}.npz"

    def get(self, key: tuple) -> dict[str, np.ndarray] | None:
        """The arrays kept under ``key``, or ``None`` (none, or a damaged file)."""
        try:
            with np.load(self._path(key), allow_pickle=False) as data:
                return {name: data[name] for name in data.files}
        except (OSError, ValueError, EOFError):
            return None

    def put(self, key: tuple, arrays: Mapping[str, np.ndarray]) -> None:
        """Keep ``arrays`` under ``key`` (replacing what was there)."""
        write_atomically(self._path(key), lambda stream: np.savez(stream, **arrays),  # type: ignore[arg-type]
                         durable=False)


def fingerprint(course: Course) -> str:
    """What every reference value depends on, besides its case (a sha256, in hex)."""
    import gradcam_kit.efficientnet as efficientnet
    import gradcam_kit.worker.models as models

    digest = hashlib.sha256()
    files = [course.solutions_dir / "answer_key.py", course.reference_module, course.helper_module,
             Path(models.__file__), Path(efficientnet.__file__)]
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    policy = weights_policy()
    digest.update(f"policy={policy}|torch={torch.__version__}".encode())
    if Path(policy).expanduser().is_file():
        info = Path(policy).expanduser().stat()
        digest.update(f"{info.st_size}:{info.st_mtime_ns}".encode())
    for name in sorted({image.name for image in (CATS, WOMAN_DOG, SECOND_DOG)}):
        path = course.images_dir / name
        if path.is_file():
            digest.update(name.encode() + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()
