"""Shared test set-up: software EGL rendering must be chosen before anything imports mujoco."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
