"""The output rule of every realgap command, in one place.

An existing output is never touched without ``--resume`` (continue it) or ``--overwrite`` (replace it);
``--resume`` of an output that does not exist is refused (a mistyped path must not start afresh silently).
Every check runs before any work, so a refusal writes nothing.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from realgap.errors import RealgapError


def check_writable(out: Path, field: str = "out") -> None:
    """Fail early (before any simulation) when ``out`` cannot be created or written."""
    probe_dir = out if out.exists() else next((p for p in out.parents if p.exists()), Path("/"))
    if probe_dir.exists() and not probe_dir.is_dir():
        raise RealgapError(f"{field}: {probe_dir} is a file, not a folder")
    probe = probe_dir / f".realgap-write-test-{uuid.uuid4().hex}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise RealgapError(f"{field}: {out} is not writable ({e.strerror or e})") from e


def claim_output(out: Path, resume: bool, overwrite: bool, *, field: str = "out", marker: str | None = None,
                 what: str = "output") -> str:
    """Decide what to do with ``out``: 'new', 'resume' or 'overwrite'; raise on a conflict. Changes nothing.

    ``marker``: a file an output of this kind always holds; resuming a folder without it is refused.
    """
    out = Path(out)
    if resume and overwrite:
        raise RealgapError("--resume and --overwrite exclude each other")
    check_writable(out, field)
    exists = out.exists() and (not out.is_dir() or any(out.iterdir()))
    if not exists:
        if resume:
            raise RealgapError(f"{field}: {out} does not exist or is empty, so there is nothing to resume "
                               "(drop --resume to start it)")
        return "new"
    if overwrite:
        return "overwrite"
    if resume:
        if marker and not (out / marker).exists():
            raise RealgapError(f"{out / marker}: missing, so {out} is not a {what} to resume")
        return "resume"
    raise RealgapError(f"{field}: {out} exists; pass --resume to continue it or --overwrite to replace it")


def prepare_dir(out: Path, resume: bool, overwrite: bool, **claim) -> str:
    """``claim_output``, then make the folder: emptied on 'overwrite', created on 'new'. Returns the mode."""
    out = Path(out)
    mode = claim_output(out, resume, overwrite, **claim)
    if mode == "overwrite":
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return mode
