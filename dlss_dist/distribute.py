"""Strategy factory: which devices and hosts train together.

The strategy is a gin choice (`distribute.strategy = 'mirrored'`); where the hosts are is the
environment's business (`TF_CONFIG`, or a Kubernetes Indexed Job's `JOB_COMPLETION_INDEX`
plus `DLSS_WORKER_HOSTS`). Call `create_strategy()` before any other TensorFlow op runs:
logical CPU devices and collective ops can only be configured before TF initialises.
"""

from __future__ import annotations

import json
import os

import gin
import tensorflow as tf
from absl import logging

STRATEGIES = ("mirrored", "multi_worker", "one_device")
WORKER_HOSTS_ENV = "DLSS_WORKER_HOSTS"
INDEX_ENV = "JOB_COMPLETION_INDEX"


def tf_config_from_environment(environ: dict[str, str] | None = None) -> dict | None:
    """Returns the cluster spec this process belongs to, or None for a single host.

    Args:
      environ: the environment to read (default `os.environ`).

    Returns:
      The parsed `TF_CONFIG` when set; else one built from `DLSS_WORKER_HOSTS`
      (comma-separated `host:port`, in index order) and `JOB_COMPLETION_INDEX`; else None.
    """
    environ = os.environ if environ is None else environ
    if environ.get("TF_CONFIG"):
        return json.loads(environ["TF_CONFIG"])
    hosts_value = environ.get(WORKER_HOSTS_ENV, "").strip()
    if not hosts_value:
        return None
    hosts = [host.strip() for host in hosts_value.split(",") if host.strip()]
    if INDEX_ENV not in environ:
        raise ValueError(
            f"{WORKER_HOSTS_ENV} is set but {INDEX_ENV} is not: run as a Kubernetes Indexed Job "
            f"(completionMode: Indexed) or set {INDEX_ENV} to this worker's index."
        )
    index = int(environ[INDEX_ENV])
    if not 0 <= index < len(hosts):
        raise ValueError(f"{INDEX_ENV}={index} is outside {WORKER_HOSTS_ENV} ({len(hosts)} hosts).")
    return {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}


def _split_cpu(num_devices: int) -> list[str]:
    """Splits the host CPU into `num_devices` logical devices (local multi-replica runs)."""
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)]
    )
    return [device.name for device in tf.config.list_logical_devices("CPU")]


@gin.configurable("distribute")
def create_strategy(strategy: str = "mirrored", num_cpu_devices: int = 1) -> tf.distribute.Strategy:
    """Creates the tf.distribute strategy named by gin.

    Args:
      strategy: 'mirrored' (all local GPUs; without GPUs, `num_cpu_devices` logical CPUs),
        'multi_worker' (MultiWorkerMirroredStrategy over the hosts of `TF_CONFIG` or of
        the Indexed-Job environment), or 'one_device'.
      num_cpu_devices: logical CPU devices to mirror over when there is no GPU.

    Returns:
      The strategy. Models, optimizers and checkpoints must be created in its scope.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"distribute.strategy={strategy!r}: choose one of {STRATEGIES}.")
    if num_cpu_devices < 1:
        raise ValueError(f"distribute.num_cpu_devices must be >= 1, got {num_cpu_devices}.")
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        # Without this TF grabs all GPU memory up front, which starves TF Serving or a
        # second process sharing the card.
        tf.config.experimental.set_memory_growth(gpu, True)

    if strategy == "multi_worker":
        config = tf_config_from_environment()
        if config is None:
            raise ValueError(
                "distribute.strategy='multi_worker' needs TF_CONFIG, or "
                f"{WORKER_HOSTS_ENV} and {INDEX_ENV}, in the environment."
            )
        if num_cpu_devices > 1:
            # MultiWorkerMirroredStrategy uses one CPU device per worker, whatever the split.
            raise ValueError(
                "distribute.num_cpu_devices > 1 has no effect with 'multi_worker': run more "
                "workers instead."
            )
        os.environ["TF_CONFIG"] = json.dumps(config)
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.NCCL
            if gpus
            else tf.distribute.experimental.CommunicationImplementation.RING
        )
        result = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    elif strategy == "one_device":
        result = tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    elif gpus:
        result = tf.distribute.MirroredStrategy()
    elif num_cpu_devices > 1:
        result = tf.distribute.MirroredStrategy(devices=_split_cpu(num_cpu_devices))
    else:
        result = tf.distribute.MirroredStrategy(devices=["/cpu:0"])
    logging.info(
        "Strategy %s with %d replica(s) in sync.",
        type(result).__name__,
        result.num_replicas_in_sync,
    )
    return result


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the one process that writes summaries, samples, configs and exports."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return not has_chief and resolver.task_type == "worker" and resolver.task_id == 0


def worker_id(strategy: tf.distribute.Strategy) -> int:
    """This process's task index (0 on a single host)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return int(resolver.task_id or 0) if resolver is not None else 0
