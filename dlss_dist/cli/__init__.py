"""Thin absl entry points; the work happens in the library modules they call."""

from dlss_dist import console


def quiet_tensorflow_logs() -> None:
    """Sets up the console (see `dlss_dist.console`): the tool's own story by default,
    library internals at `--verbosity=1`. Call first in `main`, before TensorFlow loads."""
    console.setup()
