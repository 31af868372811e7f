"""Episode videos written with OpenCV from stored frames (no re-simulation).

opencv-python-headless 5 ships an FFmpeg without a software H.264 encoder here, so ``avc1`` usually
fails to open and we fall back to ``mp4v`` (MPEG-4 part 2). Browsers do not play mp4v, so when that
happens a VP8 ``.webm`` copy is written too, for playback inside the HTML report.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

MP4_CODECS = ("avc1", "mp4v")
_WORKING: dict[str, bool] = {}  # fourcc -> opens on this machine (probed once per process)


def _quiet_cv2():
    import cv2

    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except AttributeError:
        pass
    return cv2


def _open(path: Path, fourcc: str, fps: float, size: tuple[int, int]):
    cv2 = _quiet_cv2()
    if _WORKING.get(fourcc) is False:
        return None
    # FFmpeg prints its own complaints on fd 2 when a codec is missing; hide them while probing.
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    ok = writer.isOpened()
    _WORKING[fourcc] = ok
    if not ok:
        writer.release()
        if path.exists():
            path.unlink()
        return None
    return writer


def _write(writer, frames: np.ndarray) -> None:
    cv2 = _quiet_cv2()
    for frame in frames:
        writer.write(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR))
    writer.release()


def write_video(path: Path, frames: np.ndarray, fps: float = 20.0) -> dict:
    """Write RGB ``frames`` (T, H, W, 3) uint8 to ``path`` (.mp4). Returns {mp4, codec, webm}."""
    path = Path(path)
    frames = np.asarray(frames, dtype=np.uint8)
    size = (frames.shape[2], frames.shape[1])
    result = {"mp4": None, "codec": None, "webm": None}
    for codec in MP4_CODECS:
        writer = _open(path, codec, fps, size)
        if writer is not None:
            _write(writer, frames)
            result.update(mp4=path, codec=codec)
            break
    if result["codec"] != "avc1":
        webm = path.with_suffix(".webm")
        writer = _open(webm, "VP80", fps, size)
        if writer is not None:
            _write(writer, frames)
            result["webm"] = webm
    return result
