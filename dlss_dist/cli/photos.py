"""Turns the installed photo package into photos/{train,test}/ + licence manifest.

  python -m dlss_dist.cli.photos --output_dir=photos      (what `make photos` runs)

See dlss_dist/photos.py and docs/real-world.md.
"""

from __future__ import annotations

import sys

from absl import app, flags

from dlss_dist import photos

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "photos", "Where train/, test/ and photos.json go.")
flags.DEFINE_string("source_dir", photos.SOURCE_DIR, "The installed package's photographs.")
flags.DEFINE_string("copyright_file", photos.COPYRIGHT_FILE, "The package's DEP-5 copyright file.")
flags.DEFINE_integer("downscale", 4, "Reduction factor applied to each photograph.", lower_bound=1)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        manifest = photos.build(
            FLAGS.output_dir,
            source_dir=FLAGS.source_dir,
            copyright_file=FLAGS.copyright_file,
            downscale=FLAGS.downscale,
        )
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"photos: {error}")
    counts = {s: sum(r["split"] == s for r in manifest["photos"]) for s in ("train", "test")}
    print(
        f"Wrote {counts['train']} training and {counts['test']} held-out photographs to "
        f"{FLAGS.output_dir} (licences in {photos.MANIFEST_FILE} and {photos.ATTRIBUTION_FILE})"
    )


if __name__ == "__main__":
    app.run(main)
