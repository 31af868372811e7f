"""User-facing errors.

Raise ``RealgapError`` for bad input: the message is one line and names the field or file,
e.g. ``randomization.axes.physics.friction: min 1.2 > max 0.8``. The CLI prints it and exits 2.
"""


class RealgapError(ValueError):
    """Bad input from a user (config, file, checkpoint). One line; names the field or file."""
