"""The outer loop: train in chunks that end where a periodic action is next due.

Every process of a multi-worker run executes the same sequence of collective calls (train
chunks, checkpoint saves, the preemption vote), because every worker builds the same actions
with the same intervals and so cuts the same chunks.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable, Sequence

from absl import logging

from dlss_dist.training import actions as actions_lib

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM: a restartPolicy=OnFailure pod is restarted.


class NonFiniteLossError(RuntimeError):
    """Training produced NaN or Inf; the last saved checkpoint is still good."""

    user_error = True  # the message says what to do: a command-line tool prints one line


class RunLockLostError(RuntimeError):
    """Another run took this model directory's lock; this one stopped without saving."""

    user_error = True


class Preempted(Exception):  # noqa: N818 - a signal, not an error
    """A stop signal arrived; a checkpoint was written at `step` before stopping.

    `exit_code` is 128 + the signal's number (143 for SIGTERM, 130 for SIGINT), what a
    shell reports for a process the signal ended.
    """

    user_error = True  # a tool that does not catch it prints one line and exits exit_code

    def __init__(self, step: int, signum: int):
        name = signal.Signals(signum).name
        super().__init__(f"Stopped by {name} after saving a checkpoint at step {step}.")
        self.step = step
        self.signum = signum
        self.exit_code = 128 + signum


class Controller:
    """Runs `trainer.train` chunk by chunk up to `total_steps`, with actions in between.

    Args:
      trainer: has `train(iterator, num_steps) -> metrics` and a `global_step` variable.
      iterator: the distributed input iterator.
      total_steps: train until the global step reaches this.
      steps_per_loop: the longest chunk (steps per compiled call).
      actions: periodic actions; a chunk ends at the earliest `next_due` of any of them.
      checkpoint: the checkpoint action, also used before stopping on a signal.
      vote: called after every chunk; returns (signal number or 0, run lock lost).
      global_batch_size: for the images-per-second metric.
      progress: an optional `dlss_dist.progress.Progress` (`update(done=step, metrics=...)`).
      last_good_checkpoint: names the newest checkpoint in a non-finite-loss message.
    """

    def __init__(
        self,
        *,
        trainer,
        iterator,
        total_steps: int,
        steps_per_loop: int,
        actions: Sequence[actions_lib.PeriodicAction],
        checkpoint: actions_lib.SaveCheckpoint,
        vote: Callable[[], tuple[int, bool]],
        global_batch_size: int,
        progress=None,
        last_good_checkpoint: Callable[[], str | None] = lambda: None,
    ):
        self.trainer = trainer
        self.iterator = iterator
        self.total_steps = total_steps
        self.steps_per_loop = steps_per_loop
        self.actions = list(actions)
        self.checkpoint = checkpoint
        self.vote = vote
        self.global_batch_size = global_batch_size
        self.progress = progress
        self.last_good_checkpoint = last_good_checkpoint

    def next_chunk_end(self, step: int) -> int:
        return min(
            step + self.steps_per_loop,
            self.total_steps,
            *(action.next_due(step) for action in self.actions),
        )

    def run(self) -> dict[str, float]:
        """Trains to `total_steps`; returns the last chunk's metrics.

        Raises:
          NonFiniteLossError: a loss became NaN or Inf (nothing is saved for that chunk).
          Preempted: a stop signal arrived (after a checkpoint was saved).
          RunLockLostError: another run took over the model directory.
        """
        current = int(self.trainer.global_step.numpy())
        metrics: dict[str, float] = {}
        while current < self.total_steps:
            chunk_end = self.next_chunk_end(current)
            done = chunk_end - current
            started = time.perf_counter()
            metrics = self.trainer.train(self.iterator, done)
            elapsed = time.perf_counter() - started
            current = chunk_end
            bad = {name: value for name, value in metrics.items() if not math.isfinite(value)}
            if bad:
                raise NonFiniteLossError(
                    f"Non-finite loss {bad} in steps {current - done + 1}..{current}; "
                    f"training stopped. The last good checkpoint is "
                    f"{self.last_good_checkpoint()}."
                )
            data_wait = metrics.pop("data_wait_seconds", None)
            metrics["images_per_second"] = done * self.global_batch_size / elapsed
            if data_wait is not None:
                metrics["data_wait_fraction"] = data_wait / elapsed
            if self.progress is not None:
                self.progress.update(done=current, metrics=metrics)
            final = current == self.total_steps
            for action in self.actions:
                if action.is_due(current, final=final):
                    action(current, metrics)
            signum, lock_lost = self.vote()
            if lock_lost:
                raise RunLockLostError(
                    f"Another run took over this model directory's lock at step {current}; "
                    "stopped without saving so as not to overwrite its files."
                )
            if signum and not final:
                self.checkpoint(current)
                logging.info("Stopping at step %d.", current)
                raise Preempted(current, signum)
        return metrics
