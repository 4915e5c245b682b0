"""The worker process of the local multi-process runner: Beam's own SDK harness, minus teardown.

``python -m beam_jobs.images_to_tfrecords.worker`` runs exactly what Beam's
``python -m apache_beam.runners.worker.sdk_worker_main`` runs (same environment variables,
same harness, same logging to the runner), and when the harness returns it exits with
``os._exit`` instead of tearing the interpreter down. Tearing down an interpreter that has
loaded Beam (gRPC, pyarrow, protobuf, thousands of modules) takes about half a second of CPU,
and the local runner closes its workers one after another, waiting for each process to end:
with two workers that was over a second of every job's fixed cost (issue 20).

Nothing is lost by skipping the teardown: the harness has answered every request and
closed its log handler (which flushes the records to the runner) before it returns; we
flush our own streams. Only the local runner uses this module (see ``job.LocalRunner``);
Dataflow, Flink and Spark start their own workers.
"""

from __future__ import annotations

import os
import sys
import traceback


def main() -> None:
    try:
        from apache_beam.runners.worker import sdk_worker_main

        sdk_worker_main.main(sys.argv)
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 - reported, then the process ends with status 1
        traceback.print_exc()
        status = 1
    else:
        status = 0
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
