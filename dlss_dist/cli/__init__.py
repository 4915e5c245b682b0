"""Thin absl entry points; the work happens in the library modules they call."""

import logging


def quiet_tensorflow_logs() -> None:
    """Keeps TensorFlow's own INFO chatter (device placement, per-variable all-reduce
    messages, SavedModel internals) out of the console; dlss_dist logs through absl, which
    is a different logger, so progress lines stay."""
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
