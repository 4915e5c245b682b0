"""tf.data input functions for tf.distribute over the Beam job's TFRecords.

Data order is a pure function of (seed, step): a resumed run reads exactly the batches an
uninterrupted run would have read next, without checkpointing the iterator (distributed
iterators are not checkpointable). Each epoch shuffles files and records with a seed derived
from (seed, epoch), and every example's crop and flip come from a stateless seed derived from
(seed, input pipeline, epoch, position in epoch). To resume at step `s`, the pipeline starts
at the epoch that step falls in and skips the raw (still encoded) records already consumed.

The scale, the global batch size and the online degradation are values `train_loop` decides
once and passes in (the generator's scale, `train_loop.global_batch_size`,
`train_loop.online_degradation`); they are not gin parameters here. With an
online degradation (a `degradations.RealWorldDegradation`), the stored LR is not read: each HR
crop is degraded on the fly with a seed folded from the same per-example seed, so every epoch
sees new LR for the same HR and resume stays exact. Validation examples are then degraded too
(`degrade_examples`), with one fixed seed per example, so validation PSNR measures the task the
model is trained for.
"""

from __future__ import annotations

from collections.abc import Callable

import gin
import numpy as np
import tensorflow as tf
from absl import logging

from dlss_dist import imaging
from dlss_dist.data import schema, verify

InputFn = Callable[[tf.distribute.InputContext], tf.data.Dataset]
# First half of every validation example's degradation seed. Training seeds start with
# `seed * 65_537 + pipeline_id` >= 0, so validation never reuses a training draw.
_VALIDATION_SEED = -1


def to_float(image: tf.Tensor) -> tf.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1], the models' image range."""
    return tf.cast(image, tf.float32) / 127.5 - 1.0


def to_uint8(image: tf.Tensor) -> tf.Tensor:
    """float32 [-1, 1] -> uint8, clipped and rounded."""
    return tf.cast(tf.round(tf.clip_by_value((image + 1.0) * 127.5, 0.0, 255.0)), tf.uint8)


ONLINE = "online"  # what `supported_degradations` lists for LR made on the fly from HR


def supported_degradations(manifest: dict) -> tuple[str, ...]:
    """The LR sources a dataset can feed: its stored LR's degradation, and online ones.

    Every dataset stores whole HR images, so any online degradation (which needs only HR)
    is supported; the stored LR is the one named in the manifest (the bicubic one).
    """
    return (manifest.get("degradation"), ONLINE)


def check_compatible(
    manifest: dict,
    *,
    scale: int,
    degradation: str | None,
    hr_patch_size: int | None = None,
    consumer: str = "the config",
    online_degradation=None,
) -> None:
    """Raises ValueError when a dataset cannot feed a config or a model; the one such check
    (training's input pipeline, train_loop and dlss-eval all call it).

    Args:
      manifest: the dataset's manifest.json contents.
      scale: the super-resolution factor the consumer needs.
      degradation: the LR-making function the consumer expects (None accepts any).
      hr_patch_size: the config's HR training crop, in pixels (None: not training).
      consumer: named in messages, e.g. "the config" or "the model".
      online_degradation: the config's online degradation (None: the stored LR is used);
        it needs only the dataset's HR images, so the stored LR's scale and name do not
        matter then.
    """
    if online_degradation is not None:
        _check_online(manifest, scale=scale, online=online_degradation)
    elif manifest.get("scale") != scale:
        raise ValueError(
            f"The dataset was made with scale {manifest.get('scale')} but {consumer} upscales "
            f"x{scale}: use a dataset made with dlss-preprocess --scale={scale}."
        )
    elif degradation is not None and manifest.get("degradation") != degradation:
        raise ValueError(
            f"The dataset's LR images come from degradation {manifest.get('degradation')!r} "
            f"but {consumer} expects {degradation!r}; results would not be comparable. "
            "Re-create the dataset with this version of dlss-preprocess (to train on it "
            "anyway, bind make_input_fn.degradation = None)."
        )
    if hr_patch_size is None:
        return
    if hr_patch_size % scale:
        raise ValueError(f"hr_patch_size={hr_patch_size} is not divisible by scale={scale}.")
    hr_size = manifest.get("hr_size")
    if hr_size and hr_patch_size > hr_size:
        raise ValueError(
            f"hr_patch_size={hr_patch_size} is larger than the dataset's images ({hr_size}px)."
        )


def _check_online(manifest: dict, *, scale: int, online) -> None:
    """Online LR needs only the dataset's HR images, at the config's scale."""
    if ONLINE not in supported_degradations(manifest):
        raise ValueError("The dataset does not support online degradations.")
    if getattr(online, "scale", scale) != scale:
        raise ValueError(
            f"train_loop.online_degradation degrades by {online.scale}x but the generator "
            f"upscales x{scale}: bind RealWorldDegradation.scale = %SCALE."
        )


def random_hr_crop(hr: tf.Tensor, *, hr_patch_size: int, seed: tf.Tensor) -> tf.Tensor:
    """A random ``hr_patch_size`` square of an HR image (for online degradation)."""
    tf.debugging.assert_greater_equal(
        tf.reduce_min(tf.shape(hr)[:2]),
        hr_patch_size,
        message=f"an example is smaller than the {hr_patch_size}px HR crop",
    )
    return tf.image.stateless_random_crop(hr, [hr_patch_size, hr_patch_size, 3], seed)


def _shard_lengths(manifest: dict, split: str, files: list[str]) -> list[int]:
    """Examples per shard file, as the Beam job recorded them in the manifest."""
    if "shard_lengths" not in manifest["splits"][split]:
        raise ValueError(
            f"manifest.json has no shard_lengths for split {split!r}: it was not written by "
            "dlss-preprocess (or by an old version); re-create the dataset"
        )
    lengths = list(manifest["splits"][split]["shard_lengths"])
    if len(lengths) != len(files):
        raise ValueError(
            f"The manifest lists {len(lengths)} shards for split {split!r} but "
            f"{len(files)} files exist; the dataset is incomplete or was modified."
        )
    return lengths


@gin.configurable
def skip_damaged_records(enabled: bool = False) -> bool:
    """Whether training skips damaged records (bind ``skip_damaged_records.enabled = True``).

    Off (the default), a split whose files do not match the manifest stops the run with an
    error naming each damaged file. On, each split is scanned once at start (CRCs, counts),
    the damage is logged with how many records are lost, and TensorFlow's reader skips the
    rest of a file from its first bad record (it cannot resynchronise; those records are
    counted as lost too). Data order stays a function of (seed, step) for the same damage.
    """
    if not isinstance(enabled, bool):
        raise ValueError(f"skip_damaged_records.enabled must be True or False, got {enabled!r}")
    return enabled


def readable_shards(
    data_dir: str, manifest: dict, split: str, *, skip_damaged: bool
) -> tuple[list[str], list[int]]:
    """(shard files, records per file) to read for `split`, after checking them.

    Without `skip_damaged`: a cheap size check against the manifest, raising
    `verify.DatasetDamagedError` (naming each damaged file and the fix) on any mismatch;
    lengths are the manifest's. With it: a full scan; files the manifest does not list are
    left out, and lengths are what TensorFlow's reader can reach in each file.
    """
    if not skip_damaged:
        verify.check_split_sizes(data_dir, manifest, split)
        files = schema.tfrecord_files(data_dir, split)
        return files, _shard_lengths(manifest, split, files)
    reports = [r for r in verify.scan_split(data_dir, split, manifest) if r.expected is not None]
    reports = [r for r in reports if not r.missing]
    expected = sum(r.expected for r in reports)
    damaged = [r.describe() for r in reports if not r.ok]
    if damaged:
        lost = expected - sum(r.records for r in reports)
        unreachable = sum(r.records - r.reachable for r in reports)
        logging.warning(
            "Skipping %d of %d records of split %r (skip_damaged_records): %d damaged or "
            "missing, %d readable but after damage in their file: %s",
            lost + unreachable,
            expected,
            split,
            lost,
            unreachable,
            " | ".join(damaged),
        )
    return [r.path for r in reports], [r.reachable for r in reports]


def record_reader(skip_damaged: bool) -> Callable[[tf.Tensor], tf.data.Dataset]:
    """The TFRecord reader for one file: plain, or ending the file at its first damage."""
    if not skip_damaged:
        return tf.data.TFRecordDataset
    # ignore_errors ends a file at its first damaged record: readable_shards counted that.
    return lambda path: tf.data.TFRecordDataset(path).ignore_errors()


def random_paired_crop(
    lr: tf.Tensor, hr: tf.Tensor, *, scale: int, hr_patch_size: int, seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Crops aligned patches: the LR window times `scale` is exactly the HR window."""
    lr_patch = hr_patch_size // scale
    lr_shape = tf.shape(lr)
    tf.debugging.assert_equal(
        tf.shape(hr)[:2],
        lr_shape[:2] * scale,
        message=f"an example's HR size is not {scale}x its LR size",
    )
    tf.debugging.assert_greater_equal(
        tf.reduce_min(lr_shape[:2]),
        lr_patch,
        message=f"an example is smaller than the {hr_patch_size}px HR crop",
    )
    seed_y, seed_x = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    y = tf.random.stateless_uniform([], seed_y, 0, lr_shape[0] - lr_patch + 1, dtype=tf.int32)
    x = tf.random.stateless_uniform([], seed_x, 0, lr_shape[1] - lr_patch + 1, dtype=tf.int32)
    lr = lr[y : y + lr_patch, x : x + lr_patch]
    hr = hr[y * scale : (y + lr_patch) * scale, x * scale : (x + lr_patch) * scale]
    lr.set_shape([lr_patch, lr_patch, 3])
    hr.set_shape([hr_patch_size, hr_patch_size, 3])
    return lr, hr


def random_dihedral(
    lr: tf.Tensor, hr: tf.Tensor, *, seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Applies the same one of the 8 flips/90-degree rotations to both images."""
    choice = tf.random.stateless_uniform([], seed, 0, 8, dtype=tf.int32)

    def transform(image):
        image = tf.cond(choice >= 4, lambda: tf.image.flip_left_right(image), lambda: image)
        return tf.image.rot90(image, k=choice % 4)

    return transform(lr), transform(hr)


@gin.configurable(
    denylist=[
        "data_dir",
        "scale",
        "global_batch_size",
        "online_degradation",
        "start_step",
        "skip_damaged",
    ]
)
def make_input_fn(
    data_dir: str,
    *,
    scale: int,
    global_batch_size: int,
    online_degradation: Callable[[tf.Tensor, tf.Tensor], tf.Tensor] | None = None,
    start_step: int = 0,
    skip_damaged: bool | None = None,
    split: str = "train",
    hr_patch_size: int = gin.REQUIRED,
    degradation: str | None = imaging.DEGRADATION,
    seed: int = 0,
    augment: bool = True,
    shuffle_buffer: int = 1024,
    cycle_length: int = 4,
) -> InputFn:
    """Builds `input_fn(input_context)` for `strategy.distribute_datasets_from_function`.

    Args:
      data_dir: a dataset written by `dlss-preprocess`.
      scale: the super-resolution factor (the generator's, passed by `train_loop`); must
        equal the dataset's unless `online_degradation` makes the LR.
      global_batch_size: examples per step over all replicas (`train_loop.global_batch_size`,
        passed by `train_loop`, so the batches are the size the losses are scaled by).
      online_degradation: makes each LR from its HR crop in the pipeline, called as
        ``f(hr_uint8, seed) -> lr_uint8`` (`train_loop.online_degradation`, e.g.
        ``@RealWorldDegradation()``); None uses the dataset's stored LR.
      start_step: the global step training resumes at; data continues from there.
      skip_damaged: skip damaged records (`skip_damaged_records`, which `train_loop` asks
        once); None asks it here.
      split: which split to train on.
      hr_patch_size: side of the random HR training crop, in pixels.
      degradation: the LR-making function the dataset must have used (None: any);
        not checked when `online_degradation` is set, since the stored LR is not read.
      seed: data-order seed.
      augment: apply random flips and 90-degree rotations.
      shuffle_buffer: records permuted together (a block shuffle) within an epoch.
      cycle_length: shard files read in parallel.

    Returns:
      A function of a `tf.distribute.InputContext` returning a dataset of per-replica
      batches `(lr, hr)`, float32 in [-1, 1].
    """
    manifest = schema.read_manifest(data_dir)
    check_compatible(
        manifest,
        scale=scale,
        hr_patch_size=hr_patch_size,
        degradation=degradation,
        online_degradation=online_degradation,
    )
    if not schema.split_has_examples(manifest, split):
        raise ValueError(f"{data_dir} has no examples in split {split!r}.")
    if skip_damaged is None:
        skip_damaged = skip_damaged_records()
    files, lengths = readable_shards(data_dir, manifest, split, skip_damaged=skip_damaged)
    read_file = record_reader(skip_damaged)
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}.")

    def input_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        pipelines, pipeline_id = context.num_input_pipelines, context.input_pipeline_id
        if global_batch_size % pipelines:
            raise ValueError(
                f"GLOBAL_BATCH_SIZE={global_batch_size} does not divide over {pipelines} "
                "input pipelines (workers)."
            )
        per_replica_batch = context.get_per_replica_batch_size(global_batch_size)
        # Shard by file when every pipeline gets at least one; otherwise every pipeline
        # reads all files and keeps every `pipelines`-th record.
        by_file = len(files) >= pipelines
        own_files = files[pipeline_id::pipelines] if by_file else files
        if by_file:
            epoch_size = sum(lengths[pipeline_id::pipelines])
        else:
            epoch_size = len(range(pipeline_id, sum(lengths), pipelines))
        if epoch_size == 0:
            raise ValueError(f"Input pipeline {pipeline_id} of {pipelines} has no examples.")
        consumed = start_step * (global_batch_size // pipelines)
        start_epoch, skip = divmod(consumed, epoch_size)

        def epoch_records(epoch):
            # Stateless shuffles: Dataset.shuffle cannot take a per-epoch seed tensor.
            file_order = tf.random.experimental.stateless_shuffle(
                tf.constant(own_files), seed=tf.stack([tf.constant(seed, tf.int64), epoch])
            )
            records = tf.data.Dataset.from_tensor_slices(file_order).interleave(
                read_file,
                cycle_length=min(cycle_length, len(own_files)),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True,
            )
            if not by_file:
                records = records.shard(pipelines, pipeline_id)
            # Block shuffle: each run of `shuffle_buffer` records is permuted in place.
            records = (
                records.batch(shuffle_buffer)
                .enumerate()
                .map(
                    lambda block_index, block: tf.random.experimental.stateless_shuffle(
                        block,
                        seed=tf.stack(
                            [tf.constant(seed + 1, tf.int64), epoch * (1 << 32) + block_index]
                        ),
                    )
                )
                .unbatch()
            )
            return records.enumerate().map(lambda index, record: (epoch, index, record))

        def parse(epoch, index, record):
            example = schema.decode_example(record)
            seed_tensor = tf.stack(
                [tf.constant(seed * 65_537 + pipeline_id, tf.int64), epoch * (1 << 32) + index]
            )
            crop_seed, flip_seed = tf.unstack(
                tf.random.experimental.stateless_split(seed_tensor, 2)
            )
            if online_degradation is not None:
                return degrade_online(example["hr"], seed_tensor, crop_seed, flip_seed)
            lr, hr = random_paired_crop(
                example["lr"],
                example["hr"],
                scale=scale,
                hr_patch_size=hr_patch_size,
                seed=crop_seed,
            )
            if augment:
                lr, hr = random_dihedral(lr, hr, seed=flip_seed)
            return to_float(lr), to_float(hr)

        def degrade_online(full_hr, seed_tensor, crop_seed, flip_seed):
            hr = random_hr_crop(full_hr, hr_patch_size=hr_patch_size, seed=crop_seed)
            if augment:
                hr, _ = random_dihedral(hr, hr, seed=flip_seed)
            # Folded, not split, so the crop and flip seeds stay what they were.
            degrade_seed = tf.random.experimental.stateless_fold_in(seed_tensor, 2)
            lr = online_degradation(hr, degrade_seed)
            lr.set_shape([hr_patch_size // scale, hr_patch_size // scale, 3])
            return to_float(lr), to_float(hr)

        dataset = tf.data.Dataset.range(start_epoch, np.iinfo(np.int64).max)
        dataset = dataset.flat_map(epoch_records).skip(skip)
        dataset = dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        dataset = dataset.batch(per_replica_batch, drop_remainder=True)
        options = tf.data.Options()
        options.deterministic = True
        # Sharding is done above, explicitly; tf.distribute must not shard again.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)

    return input_fn


def load_examples(
    data_dir: str, split: str, count: int, *, skip_damaged: bool | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Reads the first `count` examples of a split as uint8 (lr, hr) pairs, uncropped.

    Used for sample grids and validation PSNR, where a fixed set of whole images is wanted.
    `skip_damaged` as in `make_input_fn`.
    """
    files = schema.tfrecord_files(data_dir, split)
    if not files or count <= 0:
        return []
    if skip_damaged is None:
        skip_damaged = skip_damaged_records()
    read_file = record_reader(skip_damaged)
    dataset = tf.data.Dataset.from_tensor_slices(files).flat_map(read_file)
    dataset = dataset.take(count).map(schema.decode_example)
    try:
        return [(example["lr"].numpy(), example["hr"].numpy()) for example in dataset]
    except tf.errors.DataLossError as error:
        raise verify.damage_error(data_dir, error) from error


def degrade_examples(
    examples: list[tuple[np.ndarray, np.ndarray]],
    online_degradation: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
    *,
    scale: int,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Remakes each example's LR from its HR with the training's online degradation.

    Each example gets a fixed seed (its position), so validation sees the same degraded
    inputs at every evaluation, in every run and after a resume, and its PSNR (and so the
    best export) measures what the model is trained for instead of the stored bicubic LR.
    The HR is cropped to a multiple of `scale` first (an x2 dataset can feed x4 training).

    Args:
      examples: uint8 (lr, hr) pairs from `load_examples`.
      online_degradation: ``f(hr_uint8, seed) -> lr_uint8``, as in `make_input_fn`.
      scale: the training's scale.

    Returns:
      uint8 (lr, hr) pairs, the LR ``scale`` times smaller than the (cropped) HR.
    """
    degraded = []
    for index, (_, hr) in enumerate(examples):
        height, width = hr.shape[0] // scale * scale, hr.shape[1] // scale * scale
        hr = hr[:height, :width]
        seed = tf.constant([_VALIDATION_SEED, index], tf.int64)
        lr = online_degradation(tf.constant(hr), seed).numpy()
        degraded.append((lr, hr))
    return degraded
