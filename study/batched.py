"""Members of a pack as one batched model: the MLPs and CNNs of a pack trained as stacked weights.

`multifit.Pack` writes every member's Keras model into one graph, so a pack still runs N small
matrix products per layer and traces a new graph for every pack. Here the members of a pack of
one shape (MLPs, or CNNs of standard conv layers, of the same depth and width bucket, activation,
optimizer kind, task, input and output) become one model whose leading axis is the member: each
layer's kernels stacked as [N, in, out], every hidden width padded to its bucket (`width_bucket`:
the next power of two, above 128 the next multiple of an eighth of the next power of two; padded units start at zero
and their gradients are masked, so they stay exactly zero, Adam's moments included), one batched
matrix product per layer for the whole pack. A conv layer is a matrix product too, over its input's
patches: the input padded as Keras' `padding="same"` pads, one strided slice per kernel position,
the slices side by side (Keras' kernel order), times the kernels as [N, kh · kw · channels,
channels] (`benchmarks/packed_trials.py`'s `cnn` workload compares it with Keras). Everything a member has alone stays its own,
as tensors indexed by member rather than Python branches: learning rate, momentum, L1/L2
penalties, dropout rate, training and validation sets, batch order, Adam/SGD/RMSprop state and
step count, epoch budget, early stopping with restore, per-epoch logging and pruning, and the
divergence check (a member whose loss is not finite stops updating at that batch, alone).

Trace once per shape: the graph and its variables are kept per shape (member count, layer widths
as padded, a CNN's grid, kernel and stride, data sizes, batch, optimizer kind, activation, task);
a later pack of the same shape loads its members' weights and settings into the same variables and
runs the same traced graph.

Dropout masks come from a counter-based generator: a hash of the member's seed, the layer, the
member's own step and the element's position, one vectorized op for the whole pack (TensorFlow's
random ops would take one op per member, and are slow under XLA), so a member's masks are the same
alone and in any pack. A pack of one is how an MLP or a CNN trains alone, padded to the same
bucket, so alone and packed are the same computation, to the last bit (a batched matrix product
computes each member's slice as it would alone), with one exception: compiled (XLA, members of
JIT_EPOCHS or more), the weights are the same to the bit, but the losses a member logs, sums over
examples, may differ in float32's last bits (XLA compiles a pack of one's sums apart).

Members the engine cannot express (depthwise-separable convs, compression wrappers, layers other
than Dense, Conv2D, Dropout, Reshape, Flatten and a final Rescaling) train with `multifit.Pack`.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from study import names
from study.keras_compat import keras, tf
from study.multifit import VAL_BATCH, Member, Pack, _Stopper, check_pack, judge_epoch
from study.training import FitResult, best_epoch


@dataclass(frozen=True)
class Layout:
    """A member as the engine sees it: its layers' widths (an MLP's units; a CNN's channels), the
    hidden activation, dropout rate, penalties and the regression output's fixed scale; for a CNN
    also the grid its conv layers slide over and their kernel and stride."""

    widths: tuple[int, ...]  # MLP: input features, hidden units..., output; CNN: 1, channels..., output
    activation: Callable  # the hidden layers' activation function (Keras')
    activation_name: str
    dropout: float
    l1: float
    l2: float
    scale: float  # Rescaling of a regression output: y = out · scale + offset (1, 0 for classifiers)
    offset: float
    grid: tuple[int, int] | None = None  # a CNN's input as (height, width), one channel; None: an MLP
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)

    @property
    def convs(self) -> int:
        """Conv layers before the output layer (0: an MLP)."""
        return 0 if self.grid is None else len(self.widths) - 2


def _same(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TensorFlow's `padding="same"` along one axis: (output size, zeros before, zeros after)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def grids(layout: Layout) -> list[tuple[int, int]]:
    """A CNN's grid before each conv layer and after the last (an MLP: none)."""
    if layout.grid is None:
        return []
    out = [layout.grid]
    for _ in range(layout.convs):
        (height, width), (kh, kw), (sh, sw) = out[-1], layout.kernel, layout.stride
        out.append((_same(height, kh, sh)[0], _same(width, kw, sw)[0]))
    return out


def layout_of(model) -> Layout | None:
    """The layout of a model `models.build_model` made (an MLP, or a CNN of standard conv layers),
    or None if the engine cannot train it."""
    dense: list = []
    convs: list = []
    rates: set[float] = set()
    scale, offset = 1.0, 0.0
    grid: tuple[int, int] | None = None
    flat = False
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "InputLayer":
            continue
        if kind == "Flatten":
            flat = True
        elif kind == "Reshape" and grid is None and not dense and len(layer.target_shape) == 3 \
                and layer.target_shape[-1] == 1:
            grid = (int(layer.target_shape[0]), int(layer.target_shape[1]))
        elif kind == "Conv2D" and grid is not None and not flat and _plain_conv(layer):
            convs.append(layer)
        elif kind == "Dense" and (grid is None or flat):
            dense.append(layer)
        elif kind == "Dropout" and (dense or convs) and layer.noise_shape is None:
            rates.add(float(layer.rate))
        elif kind == "Rescaling" and layer is model.layers[-1]:
            scale, offset = float(layer.scale), float(layer.offset)
        else:
            return None
    if not dense or len(model.inputs[0].shape) < 2 or len(rates) > 1 or (grid is not None and (not convs or len(dense) > 1)):
        return None
    weighted = convs + dense
    penalties = {(float(getattr(d.kernel_regularizer, "l1", 0.0)), float(getattr(d.kernel_regularizer, "l2", 0.0)))
                 for d in weighted}
    if len(penalties) != 1 or any(d.bias_regularizer is not None or not d.use_bias for d in weighted):
        return None
    if dense[-1].activation is not keras.activations.linear:
        return None
    hidden_layers = weighted[:-1]
    hidden = {keras.activations.serialize(d.activation) for d in hidden_layers}
    if len(hidden) > 1 or len({(c.kernel_size, c.strides) for c in convs}) > 1:
        return None
    l1, l2 = penalties.pop()
    name = hidden.pop() if hidden else "linear"
    activation = hidden_layers[0].activation if hidden_layers else keras.activations.linear
    dropout = rates.pop() if rates else 0.0
    if convs:
        widths = (1, *(int(c.filters) for c in convs), int(dense[-1].units))
        return Layout(widths, activation, str(name), dropout, l1, l2, scale, offset, grid,
                      (int(convs[0].kernel_size[0]), int(convs[0].kernel_size[1])),
                      (int(convs[0].strides[0]), int(convs[0].strides[1])))
    inputs = int(np.prod(model.inputs[0].shape[1:]))
    return Layout((inputs, *(int(d.units) for d in dense)), activation, str(name), dropout, l1, l2, scale, offset)


def _plain_conv(layer) -> bool:
    """A Conv2D the engine computes as a matrix product over input patches."""
    return (layer.padding == "same" and layer.data_format == "channels_last" and tuple(layer.dilation_rate) == (1, 1)
            and layer.groups == 1)


def shape_key(m: Member, layout: Layout) -> tuple:
    """Members with equal keys can train in one batched pack (besides `multifit.pack_key`). Whether
    a member has dropout and penalties is part of it: the graph computes them for a pack only if a
    member has them, and this keeps every member in the graph it has alone (a member without them
    forced into a graph with them trained to the same weights, in a check while building this, but
    the graph is another one and XLA compiles it apart)."""
    return (padded(layout), layout.grid, layout.kernel, layout.stride, layout.activation_name, m.spec.optimizer, m.task,
            m.spec.batch_size, held_rows(m.train[0]), len(m.val[0]),
            layout.dropout > 0, layout.l1 > 0 or layout.l2 > 0, compiled(m.spec))  # last: `_engine` reads them


# a small training set is held in a graph's input padded to the next power of 8 rows, while that
# input stays under this many bytes a member: one graph serves training sets of 513 to 4096 rows
TRAIN_BYTES = 16 << 20


def held_rows(x: np.ndarray) -> int:
    """The rows a member's training inputs `x` fill in the epoch graph. The graph reads its examples
    by index (a gather per step) and loops over as many batches as the member has, so rows past
    the member's own are never read: padding changes no computed value, only which graph serves
    it. Each graph costs a compile (seconds under XLA) that a small training set's few epochs
    never repay, so small sets share graphs by coarse buckets; a large set keeps its own length
    (its training dwarfs a compile, and padding it would cost memory)."""
    n, per_row = len(x), 4 * int(np.prod(x.shape[1:]))
    bucket = 8
    while bucket < n:
        bucket *= 8
    return bucket if bucket * per_row <= TRAIN_BYTES else n


def padded(layout: Layout) -> tuple[int, ...]:
    """The widths the engine trains a member at: hidden layers padded to their width bucket. A
    member alone and in any pack is padded alike, so it is the same computation either way."""
    return (layout.widths[0], *(width_bucket(w) for w in layout.widths[1:-1]), layout.widths[-1])


def width_bucket(width: int) -> int:
    """Padded width: the next power of two up to 128; above, the next multiple of an eighth of the
    next power of two (160, 192, 224, 256, then 320, 384, 448, 512, ...: four buckets an octave,
    padding by under a quarter). A wide layer's arithmetic grows as its width squared, so padding
    300 units to 384 would cost 1.6 times the arithmetic of 300 × 300 (to 320: 1.14 times); each
    bucket is a shape of its own to compile, so narrow layers, whose arithmetic is small, keep the
    coarse steps."""
    power = 1 << max(0, math.ceil(math.log2(max(1, width))))
    if power <= 128:
        return power
    step = power // 8
    return -(-width // step) * step


# ------------------------------------------------------------------------------ the graph
# XLA compiles the epoch (fused kernels, far fewer op dispatches) once a shape: worth its compile
# time for members that train this many epochs or more (benchmarks/packed_trials.py compares).
# A member's own budget decides, so it computes the same alone and in any pack.
JIT_EPOCHS = 20


def compiled(train) -> bool:
    """Whether members of this `TrainSpec` train compiled by XLA (their own budget decides)."""
    return train.epochs >= JIT_EPOCHS

ROWS = 8  # batches and validation sets are filled up to a multiple of this many rows (see _rows)


def _rows(count: int) -> int:
    """`count` rounded up to a multiple of ROWS. Vectorized kernels (exp in softmax, tanh, ...)
    round an element by its place among SIMD lanes; with every member's block a multiple of the
    lane count, a member's elements sit in the same lanes in any pack, so a member computes the
    same bits alone and packed. Filler rows have weight 0."""
    return -(-count // ROWS) * ROWS


def _fill(a: np.ndarray, rows: int) -> np.ndarray:
    """`a` with zero rows appended up to `rows`."""
    return np.concatenate([a, np.zeros((rows - len(a), *a.shape[1:]), a.dtype)]) if rows > len(a) else a


def _batches(order: np.ndarray, room: int, batch: int, rows: int) -> np.ndarray:
    """An epoch's order as [room, rows] example indices: `batch` per step (the last has what is
    left), filled with index 0 (weight 0) up to `rows`, and steps past the order's all 0."""
    out = np.zeros((room, rows), np.int64)
    full = len(order) // batch
    out[:full, :batch] = order[: full * batch].reshape(full, batch)
    if len(order) > full * batch:
        out[full, : len(order) - full * batch] = order[full * batch:]
    return out


def _mix(x):
    """MurmurHash3's 32-bit finalizer: every input bit moves every output bit (uint32 wraps)."""
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))
    x = x * tf.constant(0x85EBCA6B, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(13, tf.uint32)))
    x = x * tf.constant(0xC2B2AE35, tf.uint32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))


def _uniform(seeds, layer: int, steps, rows, width: int):
    """[N, rows, width] uniforms in [0, 1): a hash of each member's (seed, layer, step) key and the
    element's position (row · width + column), 24 bits each."""
    seed = tf.cast(tf.cast(seeds, tf.int32), tf.uint32)
    step = tf.cast(tf.cast(steps, tf.int32), tf.uint32)
    key = _mix(tf.bitwise.bitwise_xor(_mix(seed * tf.constant(0x9E3779B1, tf.uint32) + tf.constant(layer, tf.uint32)), step))
    position = tf.range(rows)[:, None] * width + tf.range(width)[None, :]
    x = _mix(tf.bitwise.bitwise_xor(tf.cast(position, tf.uint32)[None] * tf.constant(0x27D4EB2F, tf.uint32),
                                    key[:, None, None]))
    return tf.cast(tf.bitwise.right_shift(x, tf.constant(8, tf.uint32)), tf.float32) * (1.0 / (1 << 24))


def _row_sums(t):
    """Each member's sum over its examples ([N, B] -> [N]) as a matrix product, which sums each
    member's row alone; a reduction over a stacked tensor rounds by the row's place in memory."""
    return tf.linalg.matmul(t[:, None, :], tf.ones_like(t)[:, :, None])[:, 0, 0]


def _matrix_sums(t):
    """Each member's sum over its matrix ([N, rows, cols] -> [N]), as two matrix products."""
    n, rows, cols = (int(d) for d in t.shape)
    by_row = tf.linalg.matmul(t, tf.ones([n, cols, 1], t.dtype))
    return tf.linalg.matmul(by_row, tf.ones([n, rows, 1], t.dtype), transpose_a=True)[:, 0, 0]


class _Engine:
    """The variables and the traced epoch of one shape; `load` fills them with a pack's members."""

    def __init__(self, n: int, layout: Layout, task: str, optimizer: str, dropout: bool, penalized: bool, jit: bool):
        widths = padded(layout)
        self.n, self.widths, self.activation, self.task, self.optimizer = n, widths, layout.activation, task, optimizer
        self.dropout, self.penalized = dropout, penalized  # any member with dropout, with a penalty
        self.convs, self.grids, self.kernel, self.stride = layout.convs, grids(layout), layout.kernel, layout.stride
        # a layer's kernel reads `groups` blocks of its input's (padded) width: a conv layer one per
        # kernel position (kh · kw), the layer after the convs one per position of the last grid
        self.groups = [self.kernel[0] * self.kernel[1]] * self.convs + [1] * (len(widths) - 1 - self.convs)
        if self.convs:
            self.groups[self.convs] = self.grids[-1][0] * self.grids[-1][1]
        # a layer's kernel and bias are one variable, the bias its last row, multiplied by a column
        # of ones appended to the layer's input: the bias's gradient is then a row of one matrix
        # product's, which is each member's own whatever the pack (a sum over the batch axis of a
        # stacked tensor rounds by the member's place in memory, and under XLA so did a bias added
        # apart with its gradient a product of ones), and no step copies the weights to join them
        pairs = [(g * a + 1, b) for g, a, b in zip(self.groups, widths[:-1], widths[1:])]
        z = tf.zeros_initializer()
        self.kernels = [tf.Variable(z([n, a, b]), name=f"kernel_{i}") for i, (a, b) in enumerate(pairs)]
        self.masks = [tf.Variable(z([n, a, b]), trainable=False) for a, b in pairs]
        self.params = self.kernels
        slots = {"adam": 2, "sgd": 1, "rmsprop": 2}[optimizer]
        self.slots = [[tf.Variable(tf.zeros_like(v), trainable=False) for v in self.params] for _ in range(slots)]
        vector = lambda: tf.Variable(tf.zeros([n]), trainable=False)  # noqa: E731
        self.rate, self.momentum, self.l1, self.l2 = vector(), vector(), vector(), vector()
        self.keep, self.scale, self.offset, self.steps = vector(), vector(), vector(), vector()
        self.seeds = tf.Variable(tf.zeros([n], tf.int64), trainable=False)
        self.shapes: list[list[tuple[int, ...]]] = [[] for _ in range(n)]  # each member's Keras kernel shapes (load)
        self._read: list[np.ndarray] | None = None  # the kernels as last read (`weights`), None once stale
        # validation examples per graph op: a CNN's patches hold kh · kw values per channel and
        # position, so its chunk is bounded by its own (padded) shape, never by the pack's size
        widest = max((g[0] * g[1] * self.groups[0] * w for g, w in zip(self.grids[1:], widths[1:])), default=0)
        self.val_batch = VAL_BATCH if not self.convs else max(ROWS, min(VAL_BATCH, (1 << 24) // widest // ROWS * ROWS))
        self.epoch_fn = tf.function(self._epoch, autograph=False, jit_compile=jit)
        self.nbytes = sum(4 * int(np.prod(v.shape)) for v in
                          [*self.params, *self.masks, *(s for group in self.slots for s in group)])
        self.lock = threading.Lock()  # held while a pack trains in it: packs side by side (lanes) never share one

    # -- forward ---------------------------------------------------------------------------
    def _dropout(self, h, layer: int, step):
        """Inverted dropout (Keras' rule: keep where u ≥ rate, scale by 1 / (1 − rate)) with u from a
        counter-based hash of (member seed, layer, member step, position): one vectorized op for
        the pack, and a member's masks are the same alone and in any pack."""
        keep = self.keep[:, None, None]
        u = _uniform(self.seeds, layer, step, tf.shape(h)[1], int(h.shape[-1]))
        return h * (tf.cast(u >= 1.0 - keep, h.dtype) / keep)

    def _patches(self, h, i: int):
        """A conv layer's input [N, rows, height, width, channels] as its patches [N, rows · positions,
        kh · kw · channels] (the kernel's positions in Keras' order, then the channels): zeros padded
        as `padding="same"` pads, one strided slice per kernel position."""
        (height, width), (out_h, out_w) = self.grids[i], self.grids[i + 1]
        (kh, kw), (sh, sw) = self.kernel, self.stride
        _, top, bottom = _same(height, kh, sh)
        _, left, right = _same(width, kw, sw)
        h = tf.pad(h, [[0, 0], [0, 0], [top, bottom], [left, right], [0, 0]])
        taps = [h[:, :, dh: dh + (out_h - 1) * sh + 1: sh, dw: dw + (out_w - 1) * sw + 1: sw, :]
                for dh in range(kh) for dw in range(kw)]
        return tf.reshape(tf.concat(taps, axis=-1), [self.n, -1, kh * kw * int(h.shape[-1])])

    def _forward(self, x, training: bool, step=None):
        """Outputs [N, rows, outputs] of inputs [N, rows, features] (a CNN's grid, flattened)."""
        rows = tf.shape(x)[1]
        h = tf.reshape(x, [self.n, rows, *self.grids[0], 1]) if self.convs else x
        last = len(self.kernels) - 1
        for i, w in enumerate(self.kernels):
            if i < self.convs:
                h = self._patches(h, i)
            elif i == self.convs and self.convs:
                h = tf.reshape(h, [self.n, rows, -1])  # Keras' Flatten: position, then channel
            ones = tf.ones(tf.concat([tf.shape(h)[:2], [1]], axis=0), h.dtype)  # against the bias row
            h = tf.linalg.matmul(tf.concat([h, ones], axis=2), w)
            if i < last:
                h = self.activation(h)
                if i < self.convs:
                    h = tf.reshape(h, [self.n, rows, -1])  # dropout's positions: one example's maps
                if training and self.dropout:
                    h = self._dropout(h, i, step)
                if i < self.convs:
                    h = tf.reshape(h, [self.n, rows, *self.grids[i + 1], int(w.shape[-1])])
        return h

    def _losses(self, out, y):
        """Per-example data loss and second metric (correct predictions, or absolute error)."""
        if self.task == names.CLASSIFICATION:
            loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=out)
            second = tf.cast(tf.equal(tf.argmax(out, axis=-1, output_type=y.dtype), y), tf.float32)
            return loss, second
        pred = out[..., 0] * self.scale[:, None] + self.offset[:, None]
        y = tf.cast(y, pred.dtype)
        return tf.math.squared_difference(pred, y), tf.abs(pred - y)

    def _penalty(self):
        """Each member's L1 and L2 penalty. Its value decides only whether a step's loss is finite
        (the loss a member logs is its data loss; the penalty's gradient, l1 · sign(w) + 2 · l2 · w,
        does not depend on how the sum is taken), so it is summed the fast way, as matrix products:
        XLA's reduction over a stacked kernel adds one element at a time, and took a large share of
        a wide MLP's step."""
        total = tf.zeros([self.n])
        for w in self.kernels:
            w = w[:, :-1]  # the bias row has no penalty
            total += self.l1 * _matrix_sums(tf.abs(w)) + self.l2 * _matrix_sums(tf.square(w))
        return total

    # -- the optimizers, Keras' rules per member ---------------------------------------------
    def _apply(self, grads, live) -> None:
        """One step of every live member (`live`: 1.0 or 0.0 per member), Keras' update rules."""
        step = self.steps.assign_add(live)
        if self.optimizer == "adam":  # Keras' bias correction, a scalar per member as Keras computes it
            alphas = tf.stack([rate * tf.sqrt(1 - tf.pow(0.999, t)) / (1 - tf.pow(0.9, t))
                               for rate, t in zip(tf.unstack(self.rate), tf.unstack(tf.maximum(step, 1.0)))])
        for i, (var, g) in enumerate(zip(self.params, grads)):
            shape = [self.n] + [1] * (len(var.shape) - 1)
            on = tf.reshape(live, shape)
            rate, momentum = tf.reshape(self.rate, shape), tf.reshape(self.momentum, shape)
            if self.optimizer == "adam":
                beta_1, epsilon = 0.9, 1e-7
                beta_2 = 0.999
                alpha = tf.reshape(alphas, shape)
                m, v = self.slots[0][i], self.slots[1][i]
                m.assign_add(on * (g - m) * (1 - beta_1))
                v.assign_add(on * (tf.square(g) - v) * (1 - beta_2))
                var.assign_sub(on * (m * alpha) / (tf.sqrt(v) + epsilon))
            elif self.optimizer == "sgd":
                m = self.slots[0][i]
                moved = -g * rate + m * momentum
                m.assign(on * moved + (1 - on) * m)
                var.assign_add(on * moved)
            else:
                rho, epsilon = 0.9, 1e-7
                velocity, moment = self.slots[0][i], self.slots[1][i]
                fresh = rho * velocity + (1 - rho) * tf.square(g)
                velocity.assign(on * fresh + (1 - on) * velocity)
                increment = rate * g / tf.sqrt(fresh + epsilon)  # Keras: rsqrt, whose SIMD lanes round apart
                accelerated = momentum * moment + increment
                moment.assign(on * accelerated + (1 - on) * moment)
                with_momentum = tf.cast(momentum > 0, var.dtype)
                var.assign_add(-on * (with_momentum * accelerated + (1 - with_momentum) * increment))

    # -- one epoch of the pack ---------------------------------------------------------------
    def _epoch(self, x, y, x_val, y_val, val_weights, orders, weights, steps, active):
        """Every active member's `steps` over its own order, then validation. `orders` [N, room,
        rows] and `weights` [room, rows] (1 for an example, 0 for a filler row) come in rows of
        a multiple of ROWS, with room for the steps of any training set the graph serves
        (`held_rows`); `steps`, a tensor, says how many the pack has. Returns [N, 5]: data-loss
        sum, second-metric sum, first bad step (0: none), val loss sum, val second sum."""
        with _TRACED_LOCK:  # a graph compiled ahead is traced in another thread
            _TRACED[0] += 1  # counted when traced, not when run
        live0 = tf.cast(active, tf.float32)

        def body(i, loss_sum, second_sum, bad, live):
            idx, w = orders[:, i], weights[i]
            xb, yb = tf.gather(x, idx, batch_dims=1), tf.gather(y, idx, batch_dims=1)
            with tf.GradientTape() as tape:
                out = self._forward(xb, True, self.steps)
                per_example, second = self._losses(out, yb)
                per_example, second = per_example * w, second * w
                data = _row_sums(per_example) / tf.reduce_sum(w)
                # a pack without penalties skips them: their sums over every kernel are a large
                # share of a wide MLP's step under XLA
                total = data + self._penalty() if self.penalized else data
                objective = tf.reduce_sum(tf.where(tf.math.is_finite(total), total, tf.zeros_like(total)) * live)
            finite = tf.cast(tf.math.is_finite(total), tf.float32)
            newly_bad = live * (1 - finite)
            bad = tf.where(newly_bad > 0, i + 1, bad)
            live = live * finite
            grads = tape.gradient(objective, self.params)
            grads = [g * m for g, m in zip(grads, self.masks)]
            self._apply(grads, live)
            counted = live + newly_bad  # the bad batch's loss is summed, as alone (then the member stops)
            return (i + 1, loss_sum + counted * _row_sums(per_example), second_sum + counted * _row_sums(second), bad, live)

        def more(i, loss_sum, second_sum, bad, live):
            return tf.logical_and(i < steps, tf.reduce_any(live > 0))

        zero = tf.zeros([self.n])
        _, loss_sum, second_sum, bad, _ = tf.while_loop(
            more, body, (tf.constant(0), zero, zero, tf.zeros([self.n], tf.int32), live0))
        val_loss, val_second = zero, zero
        for start in range(0, int(x_val.shape[1]), self.val_batch):
            xv, yv = x_val[:, start: start + self.val_batch], y_val[:, start: start + self.val_batch]
            w = val_weights[start: start + self.val_batch]
            loss, second = self._losses(self._forward(xv, False), yv)
            val_loss += _row_sums(loss * w)
            val_second += _row_sums(second * w)
        return tf.stack([loss_sum, second_sum, tf.cast(bad, tf.float32), val_loss, val_second], axis=1)

    # -- members in and out ------------------------------------------------------------------
    def load(self, members: list[Member], layouts: list[Layout]) -> None:
        """Put the members' initial weights (padded with zeros), masks and settings in the variables."""
        self.stale()
        initial = [m.model.get_weights() for m in members]
        self.shapes = [[w.shape for w in weights[0::2]] for weights in initial]
        for i in range(len(self.kernels)):
            kernels = np.zeros(self.kernels[i].shape, np.float32)
            mask = np.zeros_like(kernels)
            for k, weights in enumerate(initial):
                w, b = weights[2 * i: 2 * i + 2]
                kernels[k] = self._padded(i, w, b)
                mask[k] = self._padded(i, np.ones_like(w), np.ones_like(b))
            self.kernels[i].assign(kernels)
            self.masks[i].assign(mask)
        for slots in self.slots:
            for s in slots:
                s.assign(tf.zeros_like(s))
        self.real = [list(layout.widths) for layout in layouts]
        def filled(values: list, idle=0.0) -> list:  # slots no member fills (`slots`): zero weights, never active
            return values + [idle] * (self.n - len(values))

        self.rate.assign(filled([m.spec.learning_rate for m in members]))
        self.momentum.assign(filled([m.spec.momentum for m in members]))
        self.l1.assign(filled([layout.l1 for layout in layouts]))
        self.l2.assign(filled([layout.l2 for layout in layouts]))
        self.keep.assign(filled([1.0 - layout.dropout for layout in layouts], 1.0))
        self.scale.assign(filled([layout.scale for layout in layouts], 1.0))
        self.offset.assign(filled([layout.offset for layout in layouts]))
        self.steps.assign(tf.zeros([self.n]))
        self.seeds.assign(filled([m.seed for m in members], 0))

    def _padded(self, i: int, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
        """A Keras kernel and bias of layer i as the engine holds them: each of the kernel's `groups`
        blocks of input rows padded to the layer's padded input width, then the bias as the last
        row, the columns padded to the padded output width."""
        groups, width, out = self.groups[i], self.widths[i], self.widths[i + 1]
        blocks = kernel.reshape(groups, -1, kernel.shape[-1])
        placed = np.zeros((groups * width + 1, out), np.float32)
        placed[:-1].reshape(groups, width, out)[:, : blocks.shape[1], : blocks.shape[2]] = blocks
        placed[-1, : len(bias)] = bias
        return placed

    def _unpadded(self, i: int, placed: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """`_padded` undone: the Keras kernel (of `shape`) and bias."""
        groups = self.groups[i]
        blocks = placed[:-1].reshape(groups, self.widths[i], self.widths[i + 1])
        return blocks[:, : int(np.prod(shape[:-1])) // groups, : shape[-1]].reshape(shape), placed[-1, : shape[-1]]

    def weights(self, k: int) -> list[np.ndarray]:
        """Member k's weights, unpadded, in its Keras model's order (kernel, bias per layer): copies,
        so that a member's best weights never hold the whole pack's arrays. The stacked variables
        are read once until they change (`stale`): early stopping reads every improving member's
        weights after an epoch, and one read of each stacked variable serves them all."""
        if self._read is None:
            self._read = [w.numpy() for w in self.kernels]
        out: list[np.ndarray] = []
        for i, placed in enumerate(self._read):
            out += (a.copy() for a in self._unpadded(i, placed[k], self.shapes[k][i]))
        return out

    def stale(self) -> None:
        """The variables are about to change (an epoch, a load): `weights` reads them afresh."""
        self._read = None

    def set_weights(self, k: int, weights: list[np.ndarray]) -> None:
        self.stale()
        for i, w in enumerate(self.kernels):  # padded entries are zero, as they stay in training
            w[k].assign(self._padded(i, weights[2 * i], weights[2 * i + 1]))


_ENGINES: dict[tuple, _Engine] = {}  # one traced graph per shape, least recently used first
_ENGINES_LOCK = threading.RLock()  # packs train side by side in threads (`objective.LANES`)
MAX_ENGINES = 64  # shapes kept at once: a searched sweep over depths, width buckets and pack sizes has dozens
MAX_ENGINE_BYTES = 1 << 30  # and the bytes of their variables (weights, masks, optimizer slots)


def slots(members: list[Member]) -> int:
    """The member axis's length for these members: their count, but at least 2 for members trained
    without XLA. TensorFlow's own batched matrix product computes a batch of one with another
    kernel than a larger batch's (one product split over threads, against products side by side),
    and the two round apart on some processors (in float32's last bits); an idle slot beside a
    lone member keeps it on the kernel it has in any pack. XLA computes every batch alike."""
    return _slots(len(members), members[0].spec)


def _slots(count: int, spec) -> int:
    return count if compiled(spec) else max(2, count)


def _key(count: int, m: Member, layout: Layout) -> tuple:
    """The engine's cache key: a pack of `count` members of `m`'s shape."""
    return (_slots(count, m.spec), *shape_key(m, layout))


def _new_engine(key: tuple, m: Member, layout: Layout) -> _Engine:
    dropout, penalized, jit = key[-3:]  # shape_key ends with these three flags: keep them last
    return _Engine(key[0], layout, m.task, m.spec.optimizer, dropout, penalized, jit)


def _cache(key: tuple, engine: _Engine) -> None:
    """Keep `engine` as the most recently used of its shape, dropping the least recently used
    shapes beyond MAX_ENGINES or MAX_ENGINE_BYTES."""
    with _ENGINES_LOCK:
        _ENGINES.pop(key, None)
        while _ENGINES and (len(_ENGINES) >= MAX_ENGINES or
                            sum(e.nbytes for e in _ENGINES.values()) + engine.nbytes > MAX_ENGINE_BYTES):
            _ENGINES.pop(next(iter(_ENGINES)))  # the least recently used shape
        _ENGINES[key] = engine


def _engine(members: list[Member], layouts: list[Layout]) -> _Engine:
    key = _key(len(members), members[0], layouts[0])  # the shape key is every member's
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key) or _new_engine(key, members[0], layouts[0])
        _cache(key, engine)
    return engine


def keys_of(members: list[Member]) -> set[tuple] | None:
    """The cache keys of the graphs `fit_together(members)` trains with, or None if some member
    trains outside the engine (`multifit.Pack`)."""
    groups, rest = _groups(members)
    return None if rest else {_key(len(group), *group[0]) for group in groups.values()}


def _layout(member: Member) -> Layout | None:
    """The member's layout, or None if the engine does not train it (or `BATCHED` is off)."""
    return layout_of(member.model) if BATCHED else None


def graph_key(member: Member, count: int) -> tuple | None:
    """The cache key of the graph a pack of `count` members of `member`'s shape trains with, or
    None if the engine does not train it."""
    layout = _layout(member)
    return None if layout is None else _key(count, member, layout)


def cached(key: tuple) -> bool:
    """Whether the graph of this key (`graph_key`) is traced and kept."""
    return key in _ENGINES


def compile_ahead(member: Member, count: int, busy: set[tuple] | frozenset[tuple] = frozenset()) -> Callable[[], None]:
    """Trace and compile, in a thread of its own, the graph a pack of `count` members of `member`'s
    shape will train with (unless it is cached), while this thread trains another pack: a small
    model's epochs leave a core idle, and a graph costs many epochs' time to compile. Returns the
    function that waits for it and caches the graph: call it before the pack trains, and before
    anything else touches TensorFlow's global state (Keras' `clear_session`).

    The graph is run once with every member inactive (no step runs, no variable changes): XLA
    compiles at a graph's first run, for its inputs' shapes, which are the pack's. Any error is
    left for the pack's own first run to meet. `busy`: the keys of the graphs training now (`keys_of`),
    not compiled again."""
    layout = _layout(member)
    if layout is None:
        return lambda: None
    key = _key(count, member, layout)
    if key in _ENGINES or key in busy:
        return lambda: None
    done: list[_Engine] = []

    def work() -> None:
        try:
            engine = _new_engine(key, member, layout)
            tensors = _tensors(engine, [member])
            # every member inactive: the loop over batches never runs, only validation reads the
            # (zero) weights; the pack's `load` then sets every variable
            with _unoptimized():
                engine.epoch_fn(*tensors.graph_inputs(np.zeros((engine.n, tensors.room, tensors.rows), np.int32),
                                                      np.zeros(engine.n, bool)))
            done.append(engine)
        except Exception:  # noqa: BLE001 - the pack's own first run compiles it again, and raises
            return

    thread = threading.Thread(target=work, name="study-compile-ahead")  # not a daemon: never cut off inside XLA
    thread.start()

    def wait() -> None:
        thread.join()
        if done and key not in _ENGINES:
            _cache(key, done[0])
            _AHEAD[0] += 1

    return wait


class _View:
    """A member's weights as early stopping reads and restores them (like a Keras model's)."""

    def __init__(self, engine: _Engine, k: int):
        self.engine, self.k = engine, k

    def get_weights(self) -> list[np.ndarray]:
        return self.engine.weights(self.k)

    def set_weights(self, weights: list[np.ndarray]) -> None:
        self.engine.set_weights(self.k, weights)


@dataclass
class _Tensors:
    """A pack's data as the epoch graph takes it: member-stacked, idle slots filled with zeros."""

    x: tf.Tensor
    y: tf.Tensor
    x_val: tf.Tensor
    y_val: tf.Tensor
    val_weights: tf.Tensor
    weights: tf.Tensor  # [room, rows]: 1 for an example, 0 for a filler row
    n: int  # training examples a member has
    batch: int
    steps: int  # batches an epoch
    room: int  # batches the graph has room for (`held_rows`)
    rows: int

    def graph_inputs(self, orders: np.ndarray, active: np.ndarray) -> tuple:
        return (self.x, self.y, self.x_val, self.y_val, self.val_weights, tf.constant(orders, tf.int32), self.weights,
                tf.constant(self.steps, tf.int32), tf.constant(active))


def _tensors(engine: _Engine, members: list[Member]) -> _Tensors:
    n, n_val = len(members[0].train[0]), len(members[0].val[0])
    held = held_rows(members[0].train[0])

    def stacked(arrays: list[np.ndarray]) -> np.ndarray:  # idle slots get zeros
        return np.stack(arrays + [np.zeros_like(arrays[0])] * (engine.n - len(arrays)))

    val_rows = _rows(n_val)
    batch = members[0].spec.batch_size
    steps, room, rows = max(1, math.ceil(n / batch)), max(1, math.ceil(held / batch)), _rows(batch)
    weights = np.zeros((room, rows), np.float32)
    for i in range(steps):
        weights[i, : min(batch, n - i * batch)] = 1.0
    return _Tensors(
        x=tf.constant(stacked([_fill(m.train[0].reshape(n, -1), held) for m in members]).astype(np.float32)),
        y=tf.constant(stacked([_fill(m.train[1], held) for m in members])),
        x_val=tf.constant(stacked([_fill(m.val[0].reshape(n_val, -1), val_rows) for m in members]).astype(np.float32)),
        y_val=tf.constant(stacked([_fill(m.val[1], val_rows) for m in members])),
        val_weights=tf.constant(_fill(np.ones(n_val, np.float32), val_rows)),
        weights=tf.constant(weights), n=n, batch=batch, steps=steps, room=room, rows=rows,
    )


def _epoch_step(engine, members, stoppers, views, active, seconds, rngs, epoch, tensors: _Tensors) -> None:
    """One epoch of every active member, then each member judged (history, stopping, pruning)."""
    n, batch, rows = tensors.n, tensors.batch, tensors.rows
    orders = np.stack([_batches(rng.permutation(n) if on else np.arange(n), tensors.room, batch, rows)
                       for rng, on in zip(rngs, active)])
    start = time.perf_counter()
    engine.stale()
    with _unoptimized():
        sums = engine.epoch_fn(*tensors.graph_inputs(orders, active)).numpy()
    seconds[active] += (time.perf_counter() - start) / max(1, active.sum())
    for k, m in enumerate(members):
        if not active[k]:
            continue
        keep_going = judge_epoch(m, epoch, sums[k], stoppers[k], views[k], n)
        if not keep_going or epoch >= m.spec.epochs:
            active[k] = False
            if m.on_stop is not None:
                m.on_stop(m.result)


def train(members: list[Member], layouts: list[Layout]) -> list[FitResult]:
    """Train MLP members (equal `shape_key`s) as one batched model; each member's Keras model gets
    its trained (or restored) weights, and its `result` is filled as `multifit.Pack` fills it."""
    engine = _engine(members, layouts)
    with engine.lock:  # a pack of the same shape training side by side (another lane) waits for this one
        return _train(engine, members, layouts)


def _train(engine: _Engine, members: list[Member], layouts: list[Layout]) -> list[FitResult]:
    engine.load(members, layouts)
    tensors = _tensors(engine, members)
    rngs = [np.random.default_rng(m.seed) for m in members] + [None] * (engine.n - len(members))
    stoppers = [_Stopper(m.spec.early_stopping) if m.spec.early_stopping.enabled else None for m in members]
    views = [_View(engine, k) for k in range(len(members))]
    active = np.arange(engine.n) < len(members)
    seconds = np.zeros(engine.n)
    epoch = 0
    with _interruptible() as check:
        while active.any():
            epoch += 1
            check()
            _epoch_step(engine, members, stoppers, views, active, seconds, rngs, epoch, tensors)
        check()
    for k, m in enumerate(members):
        stopper = stoppers[k]
        if stopper is not None and m.result.stopped != "diverged":
            stopper.finish(views[k])
        m.model.set_weights(engine.weights(k))
        m.result.seconds = float(seconds[k])
        m.result.best_epoch = best_epoch(m.result.history, m.spec.early_stopping.monitor)
    engine.stale()  # the cached engine keeps its variables, not a copy of them
    return [m.result for m in members]


@contextmanager
def _unoptimized():
    """Run the epoch graph as written: TensorFlow's graph optimizer (grappler) made this graph's
    epochs slower here (for 8 members of 2 × 64, in a one-off check while building this), and costs time
    at its first call. The setting is read when a graph is first run, from the options of the
    calling thread's function calls, which TensorFlow keeps per thread: set for this thread alone
    (a graph compiled ahead runs in another), from the process's configuration, and put back after."""
    from tensorflow.core.protobuf import config_pb2
    from tensorflow.python.eager import context

    ctx = context.context()
    before = ctx.function_call_options
    ctx.function_call_options = None  # read afresh from the process's configuration
    fresh = ctx.function_call_options
    config = config_pb2.ConfigProto()
    config.ParseFromString(fresh.config_proto_serialized)
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    ctx.function_call_options = context.FunctionCallOptions(executor_type=fresh.executor_type, config_proto=config)
    try:
        yield
    finally:
        ctx.function_call_options = before


LANE = threading.local()  # .stop: in a lane (`objective.LANES`), the Event that stops its pack at the next epoch


def _stopped() -> None:
    stop = getattr(LANE, "stop", None)
    if stop is not None and stop.is_set():
        raise KeyboardInterrupt


@contextmanager
def _interruptible():
    """Ctrl+C reaches the training loop. With compiled epochs of a few milliseconds the main thread
    spends much of its time freeing tensors, and a KeyboardInterrupt raised inside a finalizer is
    printed and dropped; here the signal is also recorded, and `check()` raises it after each epoch.
    A pack training in another thread (`objective.LANES`) never sees the signal, which Python
    delivers to the main thread: it stops when the main thread sets its lane's `stop`."""
    import signal

    from study import processes

    if processes.catching():  # `study run` records Ctrl+C for the whole process
        def recorded() -> None:
            _stopped()
            processes.check_interrupt()

        yield recorded
        return
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield _stopped
        return
    caught: list[int] = []

    def handler(signum, frame):
        caught.append(signum)
        raise KeyboardInterrupt

    def check() -> None:
        if caught:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    try:
        yield check
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


_TRACED = [0]  # graphs traced by this process, those of shapes since dropped included
_TRACED_LOCK = threading.Lock()


_AHEAD = [0]  # graphs compiled ahead (`compile_ahead`) and then cached


def compiled_ahead() -> int:
    """Graphs this process compiled ahead, while another pack trained (a benchmark's count)."""
    return _AHEAD[0]


def traces() -> int:
    """Graphs traced by this process's engines so far (a benchmark's count)."""
    return _TRACED[0]


BATCHED = True  # MLPs train as one batched model; False: every member as its own graph (the benchmark's baseline)


def _groups(members: list[Member]) -> tuple[dict[tuple, list[tuple[Member, Layout]]], list[Member]]:
    """The members the engine trains, grouped by `shape_key` (each group one batched model), and
    the rest (`multifit.Pack`)."""
    groups: dict[tuple, list[tuple[Member, Layout]]] = {}
    rest = []
    for m in members:
        layout = _layout(m)
        if layout is None:
            rest.append(m)
        else:
            groups.setdefault(shape_key(m, layout), []).append((m, layout))
    return groups, rest


def fit_together(members: list[Member]) -> list[FitResult]:
    """Train `members` (which must share a `multifit.pack_key`) as one pack: the MLPs of one shape
    as a batched model, the others (CNNs, ...) as graphs side by side (`multifit.Pack`)."""
    check_pack(members)  # before anything trains
    groups, rest = _groups(members)
    for group in groups.values():
        train([m for m, _ in group], [layout for _, layout in group])
    if rest:
        Pack(rest).run()
    return [m.result for m in members]

