r"""Builds the real-photograph set from Debian packages, with a licence manifest.

  dlss-photos --output_dir=photos            (`make photos` runs this)

Fetches nine Debian packages with `apt-get download` into --cache_dir (no root, nothing
installed; the first run needs `apt-get update` to have been run once on the machine),
extracts them with `dpkg-deb -x`, and writes photos/{train,validation,test}/ (whole packages
held out; each photograph downscaled by max(package minimum, short side / 768)),
photos/photos.json and photos/ATTRIBUTION.md. See docs/real-world.md.
"""

from __future__ import annotations

from absl import flags

from dlss_dist import console, photos
from dlss_dist.cli import run_tool, shared_flags

FLAGS = flags.FLAGS
DEFAULT_OUTPUT_DIR = "photos"
shared_flags.define(
    flags.DEFINE_string,
    "output_dir",
    None,
    f"Where train/, validation/, test/ and photos.json go (default: {DEFAULT_OUTPUT_DIR}).",
)
flags.DEFINE_string(
    "cache_dir",
    None,
    "Where the .deb files and their extractions are kept (default: "
    "$XDG_CACHE_HOME/dlss_dist/debs). .deb files already there are used as they are.",
)
flags.DEFINE_boolean(
    "download", True, "Run `apt-get download` for packages missing from --cache_dir."
)
flags.DEFINE_integer(
    "target_short_side",
    photos.TARGET_SHORT_SIDE,
    "Large photographs are reduced until their short side is this many pixels.",
    lower_bound=8,
)


def main(argv):
    del argv  # run_tool refuses stray arguments
    console.setup(tensorflow=False)
    output_dir = FLAGS.output_dir or DEFAULT_OUTPUT_DIR
    manifest = photos.build(
        output_dir,
        cache_dir=FLAGS.cache_dir,
        download=FLAGS.download,
        target_short_side=FLAGS.target_short_side,
    )
    counts, megapixels = manifest["counts"], manifest["megapixels"]
    summary = ", ".join(f"{counts[s]} {s} ({megapixels[s]} MP)" for s in photos.SPLIT_NAMES)
    print(
        f"Wrote {summary} photographs to {output_dir} "
        f"(licences in {photos.MANIFEST_FILE} and {photos.ATTRIBUTION_FILE})"
    )


def run(argv: list[str] | None = None) -> None:
    """``dlss-photos``; `argv`: the arguments (default: the command line's)."""
    run_tool("dlss-photos", main, __name__, args=argv)


if __name__ == "__main__":
    run()
