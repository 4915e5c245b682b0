"""Rewrites of a converted ONNX generator that keep its arithmetic and suit ONNX Runtime's CPU.

ONNX Runtime runs convolutions in a blocked channel layout (NCHWc: 16 channels per block on
AVX-512, 8 on AVX2) and converts a tensor back to plain NCHW (``ReorderOutput``) before any op
that has no NCHWc kernel, and forward again (``ReorderInput``) before the next convolution.
Profiling the starter model (``SessionOptions.enable_profiling``; BENCHMARKS.md) showed where
tf2onnx's faithful conversion pays for that:

* Keras's PReLU becomes ``Relu(x) + Mul(Relu(Neg(x)), -alpha)``. ``Neg`` and the per-channel
  ``Mul`` have no NCHWc kernel, so every PReLU costs two reorders and five passes in NCHW.
  `rewrite_prelu` writes it as ``alpha*x + (1-alpha)*Relu(x)``, the two per-channel scalings
  as 1x1 depthwise convolutions: all NCHWc, the ``Add`` fused into the second convolution.
* A PReLU right after a pixel shuffle (``DepthToSpace``) runs at the enlarged size; it is
  moved before the shuffle (per-channel slopes tiled to the shuffled channels, the same
  numbers), where it stays in NCHWc next to the convolution that feeds it.
* The last convolution of the pixel-shuffle upsampler (to 3 RGB channels at full size) is
  padded to a whole channel block: 16 channels computed for 3. `fold_conv_after_shuffle`
  moves it before the last shuffle (``Conv(DepthToSpace(z)) = DepthToSpace(Conv'(z))``, with
  ``Conv'`` 3x3 over the b^2 sub-pixel planes, 3*b^2 = 12 channels): one block computed at a
  quarter of the positions, and the enlarged 64-channel tensor is never shuffled or reordered.

Every rewrite matches exact node patterns and leaves a graph unchanged where they do not
occur; the output is the same function up to float rounding (tests compare with the
SavedModel: at most one grey level).
"""

from __future__ import annotations

import collections

import numpy as np

# NCHWc block on AVX-512 (8 on AVX2): a folded convolution must not need more blocks.
_CHANNEL_BLOCK = 16


class _Graph:
    """Producers, consumers and initializers of an ONNX graph, for pattern matching."""

    def __init__(self, graph):
        from onnx import numpy_helper

        self.graph = graph
        self.initializers = {i.name: i for i in graph.initializer}
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers = collections.defaultdict(list)
        for node in graph.node:
            for name in node.input:
                self.consumers[name].append(node)
        self._to_array = numpy_helper.to_array
        self._counter = 0

    def constant(self, name: str) -> np.ndarray | None:
        if name in self.initializers:
            return self._to_array(self.initializers[name])
        return None

    def only_consumer(self, tensor: str, node) -> bool:
        return [id(n) for n in self.consumers[tensor]] == [id(node)] and not any(
            tensor == output.name for output in self.graph.output
        )

    def op(self, tensor: str, op_type: str):
        node = self.producer.get(tensor)
        return node if node is not None and node.op_type == op_type else None

    def fresh(self, stem: str) -> str:
        self._counter += 1
        return f"dlss_{stem}_{self._counter}"

    def add_constant(self, stem: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.fresh(stem)
        self.graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name


def _attribute(node, name, default=None):
    from onnx import helper

    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _match_prelu(g: _Graph, add):
    """(x, slope per channel, the pattern's nodes) for ``Relu(x) + Relu(-x) * c``, else None.

    ``c`` is ``-alpha`` as a [1, C, 1, 1] constant (NCHW: tf2onnx has moved the layout
    transposes out of the network by then).
    """
    if add.op_type != "Add" or len(add.input) != 2:
        return None
    for relu_input, mul_input in (add.input, add.input[::-1]):
        relu, mul = g.op(relu_input, "Relu"), g.op(mul_input, "Mul")
        if relu is None or mul is None:
            continue
        for negated, constant in (mul.input, mul.input[::-1]):
            c = g.constant(constant)
            relu_neg = g.op(negated, "Relu")
            neg = relu_neg and g.op(relu_neg.input[0], "Neg")
            if c is None or neg is None or neg.input[0] != relu.input[0]:
                continue
            if c.ndim != 4 or c.shape[0] != 1 or c.shape[2:] != (1, 1):
                continue
            inner = [(relu, add), (mul, add), (relu_neg, mul), (neg, relu_neg)]
            if not all(g.only_consumer(node.output[0], user) for node, user in inner):
                continue
            return relu.input[0], -c.reshape(-1).astype(np.float32), [relu, neg, relu_neg, mul]
    return None


def _prelu_nodes(g: _Graph, x: str, slope: np.ndarray, output: str) -> list:
    """``slope*x + (1-slope)*Relu(x)`` into `output`, the per-channel scalings as 1x1
    depthwise convolutions (NCHW input with ``slope.size`` channels)."""
    from onnx import helper

    shape = (slope.size, 1, 1, 1)
    depthwise = {"group": slope.size, "kernel_shape": [1, 1]}
    positive, scaled, rest = g.fresh("prelu_relu"), g.fresh("prelu_scaled"), g.fresh("prelu_rest")
    slope_name = g.add_constant("prelu_slope", slope.reshape(shape))
    rest_name = g.add_constant("prelu_one_minus_slope", (1 - slope).reshape(shape))
    return [
        helper.make_node("Relu", [x], [positive], name=positive),
        helper.make_node("Conv", [x, slope_name], [scaled], name=scaled, **depthwise),
        helper.make_node("Conv", [positive, rest_name], [rest], name=rest, **depthwise),
        helper.make_node("Add", [scaled, rest], [output], name=g.fresh("prelu")),
    ]


def _shuffle_node(g: _Graph, x: str, output: str, block: int):
    """A pixel shuffle (DepthToSpace, DCR: the channel order tf2onnx writes) of `x`."""
    from onnx import helper

    return helper.make_node(
        "DepthToSpace", [x], [output], blocksize=block, mode="DCR", name=g.fresh("shuffle")
    )


def rewrite_prelu(model) -> int:
    """Rewrites every PReLU pattern as NCHWc-friendly ops (see the module); returns how many.

    A PReLU whose input is a ``DepthToSpace`` (DCR, used by nothing else) is moved before it.
    """

    g = _Graph(model.graph)
    replacements, removed = {}, set()
    for add in model.graph.node:
        match = _match_prelu(g, add)
        if match is None:
            continue
        x, slope, nodes = match
        output, tail = add.output[0], []
        shuffle = g.op(x, "DepthToSpace")
        if (
            shuffle is not None
            and _attribute(shuffle, "mode", b"DCR") in (b"DCR", "DCR")
            and sorted(id(n) for n in g.consumers[x]) == sorted(id(n) for n in nodes[:2])
            and not any(x == out.name for out in model.graph.output)
        ):
            block = _attribute(shuffle, "blocksize")
            # DCR: input channel (dy * block + dx) * C + c becomes channel c at (dy, dx).
            slope = np.tile(slope, block * block)
            x, output = shuffle.input[0], g.fresh("prelu_before_shuffle")
            tail = [_shuffle_node(g, output, add.output[0], block)]
            nodes = [*nodes, shuffle]
        replacements[id(add)] = [*_prelu_nodes(g, x, slope, output), *tail]
        removed.update(id(n) for n in nodes)
    _replace(model.graph, replacements, removed)
    return len(replacements)


def _conv_padding(conv, kernel: tuple[int, int]) -> bool:
    """True for a stride-1, undilated, ungrouped conv padded to keep the size (odd kernel)."""
    kh, kw = kernel
    if kh % 2 == 0 or kw % 2 == 0:
        return False
    if any(v != 1 for v in _attribute(conv, "strides", [1, 1])):
        return False
    if any(v != 1 for v in _attribute(conv, "dilations", [1, 1])):
        return False
    if _attribute(conv, "group", 1) != 1:
        return False
    auto_pad = _attribute(conv, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return True
    return auto_pad == "NOTSET" and list(_attribute(conv, "pads", [0] * 4)) == [
        kh // 2,
        kw // 2,
        kh // 2,
        kw // 2,
    ]


def fold_kernel(weights: np.ndarray, block: int) -> tuple[np.ndarray, int, int]:
    """The kernel of ``Conv'`` with ``Conv(DepthToSpace(z)) = DepthToSpace(Conv'(z))`` (DCR).

    Args:
      weights: [C_out, C_in, kh, kw] of a same-size conv (odd kernel) after the shuffle.
      block: the shuffle's block size.

    Returns:
      (kernel [C_out*b^2, C_in*b^2, K, K] for the un-shuffled input, padding before, after).
    """
    c_out, c_in, kh, kw = weights.shape
    radius = max(kh, kw) // 2
    low = -((radius + block - 1) // block)  # floor(-radius / block)
    high = (block - 1 + radius) // block
    size = high - low + 1
    folded = np.zeros((block * block * c_out, block * block * c_in, size, size), np.float32)
    for dy in range(block):
        for dx in range(block):
            rows = slice((dy * block + dx) * c_out, (dy * block + dx + 1) * c_out)
            for ky in range(kh):
                for kx in range(kw):
                    # The enlarged pixel (block*i + dy + ky - rh, ...) lies in un-shuffled
                    # pixel i + oy at sub-pixel sy.
                    oy, sy = divmod(dy + ky - kh // 2, block)
                    ox, sx = divmod(dx + kx - kw // 2, block)
                    cols = slice((sy * block + sx) * c_in, (sy * block + sx + 1) * c_in)
                    folded[rows, cols, oy - low, ox - low] += weights[:, :, ky, kx]
    return folded, -low, high


def fold_conv_after_shuffle(model, *, channel_block: int = _CHANNEL_BLOCK) -> int:
    """Moves a convolution with few output channels before the ``DepthToSpace`` feeding it.

    Only where the folded convolution still fits in one channel block (C_out * b^2 <=
    `channel_block`, e.g. RGB after a x2 shuffle: 12): there it costs no more blocks than the
    original at a b^2-th of the positions. Wider convolutions would cost b^2 times more and
    are left alone. Returns how many were folded.
    """
    from onnx import helper

    g = _Graph(model.graph)
    replacements, removed, count = {}, set(), 0
    for conv in model.graph.node:
        if conv.op_type != "Conv":
            continue
        shuffle = g.op(conv.input[0], "DepthToSpace")
        weights = g.constant(conv.input[1]) if len(conv.input) > 1 else None
        if shuffle is None or weights is None or weights.ndim != 4:
            continue
        block = _attribute(shuffle, "blocksize")
        c_out = weights.shape[0]
        if (
            _attribute(shuffle, "mode", b"DCR") not in (b"DCR", "DCR")
            or not g.only_consumer(conv.input[0], conv)
            or c_out * block * block > channel_block
            or not _conv_padding(conv, weights.shape[2:])
        ):
            continue
        bias = g.constant(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else None
        if len(conv.input) > 2 and conv.input[2] and bias is None:
            continue
        bias = np.zeros(c_out, np.float32) if bias is None else bias
        kernel, before, after = fold_kernel(weights, block)
        folded = g.fresh("folded_conv")
        replacements[id(conv)] = [
            helper.make_node(
                "Conv",
                [
                    shuffle.input[0],
                    g.add_constant("folded_kernel", kernel),
                    g.add_constant("folded_bias", np.tile(bias, block * block)),
                ],
                [folded],
                name=folded,
                kernel_shape=list(kernel.shape[2:]),
                pads=[before, before, after, after],
            ),
            _shuffle_node(g, folded, conv.output[0], block),
        ]
        removed.update({id(conv), id(shuffle)})
        count += 1
    _replace(model.graph, replacements, removed)
    return count


def _replace(graph, replacements: dict, removed: set) -> None:
    """Puts each replacement at its anchor node's place, drops removed nodes and constants
    nothing reads any more (the graph stays topologically sorted: a replacement reads only
    what its anchor's pattern read, all produced earlier)."""
    if not replacements:
        return
    nodes = []
    for node in graph.node:
        if id(node) in replacements:
            nodes.extend(replacements[id(node)])
        elif id(node) not in removed:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    unused = [i for i in graph.initializer if i.name not in used]
    for initializer in unused:
        graph.initializer.remove(initializer)


def optimize_for_cpu(model) -> dict[str, int]:
    """Applies every rewrite in place (PReLU first: it exposes the shuffle-conv pairs);
    returns {rewrite: how many times it applied}."""
    return {
        "prelu": rewrite_prelu(model),
        "folded_conv": fold_conv_after_shuffle(model),
    }
