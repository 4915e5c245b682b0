"""The outer loop with a stand-in trainer: where chunks end, which actions run, stopping."""

from __future__ import annotations

import signal

import pytest

from dlss_dist.training import actions, controller


class _Step:
    def __init__(self, value=0):
        self.value = value

    def numpy(self):
        return self.value


class FakeTrainer:
    """Counts steps and records chunk sizes; `losses` are returned per chunk."""

    def __init__(self, start=0, loss=1.0):
        self.global_step = _Step(start)
        self.chunks = []
        self.loss = loss

    def train(self, iterator, num_steps):
        self.chunks.append(num_steps)
        self.global_step.value += num_steps
        return {"g_loss": self.loss, "data_wait_seconds": 0.0}


class Recorder(actions.PeriodicAction):
    def __init__(self, every, name):
        super().__init__(every)
        self.name = name
        self.calls = []

    def __call__(self, step, metrics=None):
        self.calls.append(step)


class FakeStore:
    """Records the trainer's step at each save."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.saved = []

    def save(self):
        self.saved.append(self.trainer.global_step.value)

    def latest(self):
        return f"ckpt-{self.saved[-1]}" if self.saved else None


def _controller(trainer, *, total, per_loop, intervals, vote=lambda: (0, False)):
    recorders = [Recorder(every, f"every{every}") for every in intervals]
    store = FakeStore(trainer)
    save = actions.SaveCheckpoint(store, 4, saved_at=None)
    loop = controller.Controller(
        trainer=trainer,
        iterator=None,
        total_steps=total,
        steps_per_loop=per_loop,
        actions=[*recorders, save],
        checkpoint=save,
        vote=vote,
        global_batch_size=2,
        last_good_checkpoint=store.latest,
    )
    return loop, recorders, store


def test_chunks_end_where_an_action_is_next_due():
    # Checkpoints every 4, actions every 6 and never (0), at most 10 steps a chunk, 15 steps.
    trainer = FakeTrainer()
    loop, (six, end_only), store = _controller(trainer, total=15, per_loop=10, intervals=[6, 0])
    loop.run()
    assert trainer.chunks == [4, 2, 2, 4, 3]  # ends at 4, 6, 8, 12, 15
    assert six.calls == [6, 12, 15]  # every 6, and the final step
    assert end_only.calls == [15]
    assert store.saved == [4, 8, 12, 15]


def test_a_resumed_run_continues_the_same_schedule():
    trainer = FakeTrainer(start=9)
    loop, (six,), store = _controller(trainer, total=15, per_loop=10, intervals=[6])
    loop.run()
    assert trainer.chunks == [3, 3]  # 9 -> 12 -> 15
    assert six.calls == [12, 15]
    assert store.saved == [12, 15]


def test_a_non_finite_loss_stops_and_names_the_last_good_checkpoint():
    trainer = FakeTrainer(loss=float("nan"))
    loop, _, store = _controller(trainer, total=15, per_loop=10, intervals=[])
    store.saved.append(0)
    with pytest.raises(controller.NonFiniteLossError, match=r"steps 1\.\.4.*ckpt-0"):
        loop.run()


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_saves_at_the_chunk_end_and_stops(signum, code):
    trainer = FakeTrainer()
    votes = iter([(0, False), (signum, False)])
    loop, _, store = _controller(
        trainer, total=100, per_loop=3, intervals=[], vote=lambda: next(votes)
    )
    with pytest.raises(controller.Preempted) as stopped:
        loop.run()
    assert trainer.chunks == [3, 1]  # 0 -> 3 -> 4 (the checkpoint at 4 ends a chunk)
    assert stopped.value.step == 4 and stopped.value.exit_code == code
    assert store.saved == [4]  # saved once, by the periodic checkpoint at that step


def test_a_lost_lock_stops_without_saving():
    trainer = FakeTrainer()
    loop, _, store = _controller(
        trainer, total=100, per_loop=3, intervals=[], vote=lambda: (0, True)
    )
    with pytest.raises(controller.RunLockLostError, match="step 3"):
        loop.run()
    assert store.saved == []
