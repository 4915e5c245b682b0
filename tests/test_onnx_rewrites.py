"""The ONNX export's rewrites for ONNX Runtime's CPU layout: the same function, fewer reorders.

`dlss_dist.exporters.onnx_rewrites` rewrites Keras's PReLU and folds the RGB convolution
before the last pixel shuffle. Each rewrite is checked on hand-built graphs against the
graph it replaced (random slopes, kernels and block sizes), on a real export against the
unrewritten export, and on the shipped starter models against their SavedModel.
"""

import os

import numpy as np
import onnx
import onnxruntime
import pytest
from conftest import load_photo
from onnx import TensorProto, helper, numpy_helper
from test_export_formats import SCALE

from dlss_dist import serving
from dlss_dist.exporters import onnx_model, onnx_rewrites
from dlss_dist.serving.onnx_file import OnnxRuntime


def _run(model, x):
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return session.run(None, {"x": x})[0]


def _model(nodes, initializers, channels):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, None, None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * 4)],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in initializers.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _ops(model):
    return [node.op_type for node in model.graph.node]


def _prelu_pattern(x, out, slope_name):
    """tf2onnx's conversion of Keras's PReLU: Relu(x) + Relu(-x) * (-alpha)."""
    return [
        helper.make_node("Relu", [x], ["pos"]),
        helper.make_node("Neg", [x], ["neg"]),
        helper.make_node("Relu", ["neg"], ["neg_relu"]),
        helper.make_node("Mul", ["neg_relu", slope_name], ["neg_part"]),
        helper.make_node("Add", ["pos", "neg_part"], [out]),
    ]


@pytest.mark.parametrize("after_shuffle", [False, True])
def test_prelu_becomes_blocked_layout_ops_with_the_same_values(after_shuffle):
    rng = np.random.default_rng(0)
    channels, block = 8, 2
    # Slopes of every sign and size: negative, zero, between 0 and 1, one, above one.
    alpha = np.array([-0.5, 0.0, 0.1, 0.25, 0.9, 1.0, 1.7, -2.0], np.float32)
    nodes = _prelu_pattern("s" if after_shuffle else "x", "y", "c")
    inputs = channels * block * block if after_shuffle else channels
    if after_shuffle:
        nodes.insert(0, helper.make_node("DepthToSpace", ["x"], ["s"], blocksize=block))
    model = _model(nodes, {"c": -alpha.reshape(1, channels, 1, 1)}, inputs)
    x = rng.normal(0, 1, (1, inputs, 5, 7)).astype(np.float32)
    expected = _run(model, x)

    assert onnx_rewrites.rewrite_prelu(model) == 1
    onnx.checker.check_model(model)
    ops = _ops(model)
    assert "Neg" not in ops and "Mul" not in ops
    assert ops.count("Conv") == 2  # the two per-channel scalings, depthwise 1x1
    if after_shuffle:
        assert ops[-1] == "DepthToSpace"  # the PReLU now runs before the shuffle
    np.testing.assert_allclose(_run(model, x), expected, rtol=1e-5, atol=1e-5)


def test_prelu_whose_parts_are_read_elsewhere_is_left_alone():
    nodes = _prelu_pattern("x", "y", "c") + [helper.make_node("Add", ["y", "pos"], ["z"])]
    model = _model(nodes, {"c": np.full((1, 4, 1, 1), -0.2)}, 4)
    model.graph.output[0].name = "z"
    assert onnx_rewrites.rewrite_prelu(model) == 0
    assert "Neg" in _ops(model)


@pytest.mark.parametrize(
    ("block", "kernel", "c_out", "auto_pad"),
    [(2, 3, 3, "SAME_UPPER"), (2, 1, 2, "NOTSET"), (3, 5, 1, "NOTSET"), (4, 3, 3, "SAME_UPPER")],
)
def test_a_conv_after_a_shuffle_folds_before_it(block, kernel, c_out, auto_pad):
    rng = np.random.default_rng(block * 10 + kernel)
    c_in = 4
    conv = {"kernel_shape": [kernel, kernel]}
    if auto_pad == "NOTSET":
        conv["pads"] = [kernel // 2] * 4
    else:
        conv["auto_pad"] = auto_pad
    nodes = [
        helper.make_node("DepthToSpace", ["x"], ["s"], blocksize=block),
        helper.make_node("Conv", ["s", "w", "b"], ["y"], **conv),
    ]
    weights = {
        "w": rng.normal(0, 1, (c_out, c_in, kernel, kernel)),
        "b": rng.normal(0, 1, c_out),
    }
    model = _model(nodes, weights, c_in * block * block)
    x = rng.normal(0, 1, (1, c_in * block * block, 6, 9)).astype(np.float32)
    expected = _run(model, x)

    assert onnx_rewrites.fold_conv_after_shuffle(model, channel_block=10**6) == 1
    onnx.checker.check_model(model)
    assert _ops(model) == ["Conv", "DepthToSpace"]
    assert expected.shape == (1, c_out, 6 * block, 9 * block)
    np.testing.assert_allclose(_run(model, x), expected, rtol=1e-4, atol=1e-4)


def test_a_wide_conv_after_a_shuffle_is_not_folded():
    """64 channels after a x2 shuffle would cost 4x the multiply-adds folded: left alone."""
    nodes = [
        helper.make_node("DepthToSpace", ["x"], ["s"], blocksize=2),
        helper.make_node("Conv", ["s", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    ]
    model = _model(nodes, {"w": np.ones((8, 4, 3, 3))}, 16)
    assert onnx_rewrites.fold_conv_after_shuffle(model) == 0
    assert _ops(model) == ["DepthToSpace", "Conv"]


@pytest.mark.parametrize(
    ("activation", "upsampler"),
    [
        ("prelu", "pixelshuffle"),
        # The other two convert a generator each (~3 s): the full suite's.
        pytest.param("relu", "pixelshuffle", marks=pytest.mark.slow),
        pytest.param("prelu", "nearest_conv", marks=pytest.mark.slow),
    ],
)
def test_an_exported_generator_is_rewritten_and_computes_the_same(activation, upsampler, tmp_path):
    """A real export: with the rewrites no Neg is left, the RGB conv of the pixel-shuffle
    upsampler runs before the last shuffle, and the output equals the unrewritten export's
    (one grey level of rounding at most). The nearest-neighbour upsampler has no shuffle."""
    from test_export_formats import assert_parity

    from dlss_dist.models.generators import srresnet_generator

    generator = srresnet_generator(
        SCALE, num_filters=8, num_blocks=2, activation=activation, upsampler=upsampler
    )
    rng = np.random.default_rng(1)
    for variable in generator.weights:
        variable.assign(rng.normal(0, 0.05, variable.shape).astype(np.float32))
    paths = {}
    for rewrites in (True, False):
        paths[rewrites] = onnx_model.export_onnx(
            generator, str(tmp_path / f"{rewrites}.onnx"), scale=SCALE, cpu_rewrites=rewrites
        )
    plain, rewritten = (onnx.load(paths[r]) for r in (False, True))
    if activation == "prelu":
        assert "Neg" in _ops(plain) and "Neg" not in _ops(rewritten)
    shuffles = 2 if upsampler == "pixelshuffle" else 0
    assert _ops(rewritten).count("DepthToSpace") == _ops(plain).count("DepthToSpace") == shuffles
    if shuffles:
        last_shuffle = [n for n in rewritten.graph.node if n.op_type == "DepthToSpace"][-1]
        folded = next(n for n in rewritten.graph.node if last_shuffle.input[0] in n.output)
        assert folded.op_type == "Conv"
    assert {p.key: p.value for p in rewritten.metadata_props}["dlss_dist.scale"] == str(SCALE)
    image = load_photo("coffee")[200:237, 300:351][None]
    expected = OnnxRuntime(paths[False]).upscale_batch(image)
    assert_parity(OnnxRuntime(paths[True]).upscale_batch(image), expected, max_levels=1)


@pytest.mark.parametrize("name", ["realworld_x4", "realworld_x4_gan"])
def test_the_shipped_onnx_files_are_rewritten_and_match_their_savedmodel(name):
    """The starter models' model.onnx were re-exported with the rewrites (no Neg left) and
    agree with their own SavedModel within one grey level on a photograph."""
    savedmodel = serving.load_upscaler(name)
    onnx_file = os.path.join(savedmodel.path, "model.onnx")
    assert "Neg" not in _ops(onnx.load(onnx_file))
    image = load_photo("astronaut")[100:164, 180:228][None]
    expected = savedmodel.upscale_batch(image).astype(int)
    actual = OnnxRuntime(onnx_file).upscale_batch(image).astype(int)
    assert actual.shape == expected.shape
    assert np.abs(actual - expected).max() <= 1
    assert np.mean(actual != expected) < 0.01


@pytest.mark.slow  # four 160-pixel calls of the starter model: several seconds
def test_onnx_runtime_gives_back_its_arena_when_the_shape_changes():
    """With ONNX Runtime's memory pattern on, a call back at a shape after another one grew the
    process again by most of its working memory (0.9 GB at 255-pixel tiles), past the budget
    the tiles were sized for. Without it the arena's chunks are reused."""
    from dlss_dist.serving import memory

    runtime = OnnxRuntime(os.path.join(serving.locate("realworld_x4").path, "model.onnx"))
    image = load_photo("astronaut")[:160, :160][None]
    growth = []
    for crop in (image, image[:, :123], image, image):
        before = memory.current_rss()
        if before is None or not memory.reset_peak():
            pytest.skip("needs Linux /proc to measure resident memory")
        output = runtime.upscale_batch(crop)
        growth.append(memory.peak_rss() - before)
    assert output.shape == (1, 640, 640, 3)
    first, _, back, again = growth
    assert back < 0.75 * first + 32 * memory.MIB, [g // memory.MIB for g in growth]
    assert again < 32 * memory.MIB  # the same shape again reuses the arena
    np.testing.assert_array_equal(output, OnnxRuntime(runtime.path).upscale_batch(image))
