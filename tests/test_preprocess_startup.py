"""dlss-preprocess's start-up and tear-down (issue 20): how many workers it picks, how they
are started and end (bench/preprocess.py runs at a smoke size in tests/test_bench.py)."""

import os
import pathlib
import subprocess
import sys

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from beam_jobs.images_to_tfrecords import job

REPO = pathlib.Path(__file__).resolve().parents[1]


def _count(n):
    """A ``count(limit)`` for :func:`job.choose_workers` over ``n`` inputs."""
    return lambda limit: min(n, limit)


MULTI = "--direct_running_mode=multi_processing"


@pytest.mark.parametrize(
    "beam_args, inputs, cores, added, note",
    [
        # Enough inputs: one worker process per core.
        ((), 5000, 2, ("--direct_num_workers=2", MULTI), "2 worker processes, one per CPU core"),
        ((), 5000, 4, ("--direct_num_workers=4", MULTI), "4 worker processes"),
        (("--runner=DirectRunner",), 5000, 2, ("--direct_num_workers=2", MULTI), "2 worker"),
        # Too few inputs, or one core: one worker, in this process.
        ((), 12, 2, ("--direct_num_workers=1",), "1 worker: 12 inputs are too few"),
        ((), 5000, 1, ("--direct_num_workers=1",), "1 worker (1 CPU core available)"),
        # The user's choices stand.
        (("--direct_num_workers=3",), 5000, 2, (), "3 workers (--direct_num_workers)"),
        (("--direct_running_mode=in_memory",), 5000, 2, ("--direct_num_workers=1",), "in_memory"),
        (
            ("--direct_running_mode=multi_threading",),
            5000,
            2,
            ("--direct_num_workers=2",),
            "2 worker threads",
        ),
        # Not a local runner: not ours to choose, and nothing to say.
        (("--runner=DataflowRunner",), 5000, 2, (), None),
        (("--runner=PortableRunner", "--environment_type=LOOPBACK"), 5000, 2, (), None),
    ],
)
def test_default_workers(beam_args, inputs, cores, added, note):
    extra, said = job.choose_workers(beam_args, _count(inputs), cores)
    assert extra == added
    if note is None:
        assert said is None
    else:
        assert said.startswith(note) or note in said, said


def test_the_threshold_is_where_two_workers_start(monkeypatch):
    below, _ = job.choose_workers((), _count(job.WORKERS_PAY_OFF_FROM - 1), 2)
    at, _ = job.choose_workers((), _count(job.WORKERS_PAY_OFF_FROM), 2)
    assert below == ("--direct_num_workers=1",)
    assert at[0] == "--direct_num_workers=2"


def test_inputs_are_counted_up_to_the_limit_only(tmp_path, sample_photos):
    options = job.check_options(
        job.JobOptions(source="folder", inputs={"input_dir": sample_photos}, output_dir="x")
    )
    assert job.count_inputs(options, 1000) == 12
    assert job.count_inputs(options, 5) == 5


def test_available_cores_is_at_least_one():
    assert 1 <= job.available_cores() <= (os.cpu_count() or 1)


def test_multi_process_workers_run_our_worker_module(monkeypatch):
    """Beam's own command for a multi_processing worker is what LocalRunner replaces (if Beam
    changed it, the workers would silently pay the slow exit again)."""
    seen = []

    def capture(self, pipeline_proto, options):
        seen.extend(e.payload for e in pipeline_proto.components.environments.values())
        raise StopIteration  # stop before anything runs

    monkeypatch.setattr(FnApiRunner, "run_via_runner_api", capture)
    options = PipelineOptions(["--direct_num_workers=2", "--direct_running_mode=multi_processing"])
    pipeline = beam.Pipeline(runner=job.LocalRunner(), options=options)
    _ = pipeline | beam.Create([1]) | beam.Map(str)
    with pytest.raises(StopIteration):
        pipeline.run()
    assert job.WORKER_COMMAND.encode() in seen
    assert job._BEAM_WORKER_COMMAND.encode() not in seen


@pytest.mark.slow
def test_the_story_says_how_many_workers_and_why(tmp_path, sample_photos, monkeypatch):
    """Over the threshold (lowered here) the job runs one worker process per core by itself,
    says so, and writes what one worker writes."""
    monkeypatch.setattr(job, "WORKERS_PAY_OFF_FROM", 5)
    monkeypatch.setattr(job, "available_cores", lambda: 2)
    said = []
    options = job.JobOptions(
        source="folder",
        inputs={"input_dir": sample_photos},
        output_dir=str(tmp_path / "two"),
        scale=2,
        hr_size=32,
    )
    manifest = job.run_job(options, on_start=lambda chosen, note: said.append((chosen, note)))
    ((chosen, note),) = said
    assert "--direct_num_workers=2" in chosen.beam_args
    assert note.startswith("2 worker processes")
    assert manifest["totals"]["examples"] == 12
    reference = job.run_job(
        job.JobOptions(
            source="folder",
            inputs={"input_dir": sample_photos},
            output_dir=str(tmp_path / "one"),
            scale=2,
            hr_size=32,
            beam_args=("--direct_num_workers=1",),
        )
    )
    assert reference["splits"] == manifest["splits"]
    for name in os.listdir(tmp_path / "one"):
        if ".tfrecord-" in name:
            assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


NO_TENSORFLOW = """
import sys
from beam_jobs.images_to_tfrecords import cli
try:
    cli.run(sys.argv[1:])
except SystemExit as exit_:
    status = exit_.code or 0
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "jax", "torch"))
print("STATUS", status, "HEAVY", heavy)
"""


@pytest.mark.slow
def test_a_local_run_imports_no_tensorflow(tmp_path, sample_photos):
    """The launcher, the lock and (one worker: in this process) every step of the pipeline
    run without TensorFlow, whose import alone took seconds of every run's start-up."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            NO_TENSORFLOW,
            "--source=folder",
            f"--input_dir={sample_photos}",
            f"--output_dir={tmp_path / 'out'}",
            "--scale=2",
            "--hr_size=32",
            "--direct_num_workers=1",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert "STATUS 0 HEAVY []" in result.stdout, result.stdout + result.stderr[-3000:]
    assert (tmp_path / "out" / "manifest.json").exists()
