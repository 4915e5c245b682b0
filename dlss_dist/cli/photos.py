r"""Turns the installed real-photo package into an HR folder with a licence manifest.

  apt-get install lomiri-wallpapers-16.04      (Debian/Ubuntu; `make photos` does both)
  dlss-photos --output_dir=photos

Writes photos/train/ and photos/test/ (each photograph downscaled --downscale times so camera
noise and JPEG blocks shrink below a pixel), photos/photos.json (source, sha256, licence per
file) and photos/ATTRIBUTION.md. Nothing is downloaded. See docs/real-world.md.
"""

from __future__ import annotations

from absl import flags

from dlss_dist import console, photos
from dlss_dist.cli import run_tool

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "photos", "Where train/, test/ and photos.json go.")
flags.DEFINE_string("source_dir", photos.SOURCE_DIR, "The installed package's photographs.")
flags.DEFINE_string("copyright_file", photos.COPYRIGHT_FILE, "The package's DEP-5 copyright file.")
flags.DEFINE_integer("downscale", 4, "Reduction factor applied to each photograph.", lower_bound=1)


def main(argv):
    del argv  # run_tool refuses stray arguments
    console.setup(tensorflow=False)
    manifest = photos.build(
        FLAGS.output_dir,
        source_dir=FLAGS.source_dir,
        copyright_file=FLAGS.copyright_file,
        downscale=FLAGS.downscale,
    )
    counts = {s: sum(r["split"] == s for r in manifest["photos"]) for s in ("train", "test")}
    print(
        f"Wrote {counts['train']} training and {counts['test']} held-out photographs to "
        f"{FLAGS.output_dir} (licences in {photos.MANIFEST_FILE} and {photos.ATTRIBUTION_FILE})"
    )


def run():
    run_tool("dlss-photos", main, __name__)


if __name__ == "__main__":
    run()
