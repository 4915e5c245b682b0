"""``dlss-preprocess``: images → sharded LR/HR TFRecords (a TFDS dataset), with Apache Beam.

One module per concern, every import pointing down:

  errors.py    the user-fixable errors (PreflightError, NoExamplesError)
  options.py   JobOptions (the typed options the command line is built from), SOURCE_FOLDERS
  progress.py  worker → launcher progress counts (local runners)
  sources.py   one class per --source (folders, checks, listing, degradation name): SOURCES
  examples.py  the per-input work: decode, validate, crop, degrade, encode; rejects
  shards.py    byte-deterministic TFRecord shards (and why we frame them ourselves)
  manifest.py  rejects.jsonl, manifest.json, TFDS metadata; counts from combiners
  job.py       the composite ImagesToTfrecords, run_job (staging + swap)
  cli.py       absl flags built from JobOptions, the console story (dlss_dist.cli's shell)

Library use: ``run_job(JobOptions(source="folder", inputs={"input_dir": ...},
output_dir=..., scale=2, hr_size=32))`` returns the manifest.
"""


def __getattr__(name: str):
    # Lazy: importing a submodule (errors, sources) must not import the whole job.
    if name == "run":
        from beam_jobs.images_to_tfrecords.cli import run

        return run
    if name == "JobOptions":
        from beam_jobs.images_to_tfrecords.options import JobOptions

        return JobOptions
    if name in ("run_job", "ImagesToTfrecords"):
        from beam_jobs.images_to_tfrecords import job

        return getattr(job, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
