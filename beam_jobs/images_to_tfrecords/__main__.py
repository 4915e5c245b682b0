"""``python -m beam_jobs.images_to_tfrecords``: the same as ``dlss-preprocess``."""

from beam_jobs.images_to_tfrecords.cli import run

if __name__ == "__main__":
    run()
