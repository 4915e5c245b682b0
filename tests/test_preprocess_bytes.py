"""dlss-preprocess writes the same bytes as before the restructuring of issue 10.

``preprocess_digests.json`` holds SHA-256 digests recorded with the pre-restructuring job (commit
4f06572) on the generated inputs of ``preprocess_baseline.py``: every shard, rejects.jsonl
(input paths made relative) and the manifest's counts. The job runs here with the
pre-issue-10 float64 resize (``reference_imresize``) patched in, because the new Pillow
resize moves some pixels by one grey level (``test_imaging.py`` bounds that); everything
else (listing, splitting, sharding, PNG encoding, proto and TFRecord framing) must be
unchanged byte for byte.
"""

import json
import pathlib

import pytest
import reference_imresize
from preprocess_baseline import digests, make_all

from dlss_dist import imaging

EXPECTED = json.loads(pathlib.Path(__file__).with_name("preprocess_digests.json").read_text())


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("baseline") / "in")
    return base, make_all(base)


def _run(flags):
    from beam_jobs.images_to_tfrecords import cli, job

    job.run_job(cli.parse_options(flags))


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_output_bytes_unchanged(case, inputs, tmp_path, monkeypatch):
    base, cases = inputs
    monkeypatch.setattr(imaging, "imresize", reference_imresize.imresize)
    out = str(tmp_path / "out")
    _run([*cases[case], f"--output_dir={out}"])
    assert digests(out, base) == EXPECTED[case]
