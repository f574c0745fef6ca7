"""One module per task; importing this package registers them all."""

from . import reach_around  # noqa: F401
