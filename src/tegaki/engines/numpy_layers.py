"""The NumPy engine's layers: every forward pass and its backward pass, written out by hand.

Each layer is a small class. `forward(x)` computes the output y and keeps what the backward
pass will need; `backward(dy)` receives dL/dy (the gradient of the loss with respect to the
layer's output, the same shape as y), stores dL/dparam in `self.grads` and returns dL/dx. The
backward sits right under its forward, so the chain rule is visible where it applies (the style
of micrograd, with whole arrays instead of scalars).

Shapes: images (N, C, H, W), vectors (N, F). Weight layouts are PyTorch's: conv (F, C, kh, kw),
dense (out, in); flatten keeps (C, H, W) order. Arithmetic runs in the dtype the engine chose
(float32 for training, float64 for the gradient checks). No Python loop ever runs over images
or pixels; the only loops are over the kh*kw offsets of a kernel, each a whole-batch array add.

Two layers come twice: Conv2dReference and MaxPoolReference say the arithmetic as plainly as it
goes; Conv2d and MaxPool, right under them, compute the same numbers faster, and the engine
trains with those (NumpyEngine(..., reference=True) uses the plain ones). Tests hold each pair
together and both to PyTorch autograd (tests/test_engine_reference.py).

See docs/backprop.md for a walk through the conv layer's backward pass.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from tegaki import spec as S
from tegaki.errors import TegakiError


# windows: the view convolution and pooling are built on ---------------------------------------
def windows(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], axes=(2, 3)) -> np.ndarray:
    """Every kh x kw window of x along `axes` (H, W), as a view (..., Ho, Wo, ..., kh, kw): no copy.

    For x (N, C, H, W) and axes (2, 3): (N, C, Ho, Wo, kh, kw); window (i, j) starts at pixel
    (i*sh, j*sw). For channels-last x (N, H, W, C) and axes (1, 2): (N, Ho, Wo, C, kh, kw).
    """
    (kh, kw), (sh, sw) = kernel, stride
    v = sliding_window_view(x, (kh, kw), axis=axes)
    step = [slice(None)] * x.ndim
    step[axes[0]], step[axes[1]] = slice(None, None, sh), slice(None, None, sw)
    return v[tuple(step)]


def hit(u: int, v: int, out_hw: tuple[int, int], stride: tuple[int, int]) -> tuple[slice, slice]:
    """The (H, W) slices of the input pixels that kernel offset (u, v) touches in every window:
    pixel (i*sh + u, j*sw + v) for output position (i, j)."""
    (ho, wo), (sh, sw) = out_hw, stride
    return slice(u, u + sh * (ho - 1) + 1, sh), slice(v, v + sw * (wo - 1) + 1, sw)


class Layer:
    """forward(x) -> y, keeping what backward needs; backward(dy) -> dx, filling self.grads."""

    def __init__(self, name: str = ""):
        self.name = name
        self.params: dict[str, np.ndarray] = {}  # learned arrays, PyTorch layouts
        self.buffers: dict[str, np.ndarray] = {}  # state that is not learned (batchnorm statistics)
        self.grads: dict[str, np.ndarray] = {}  # dL/dparam after backward: same keys and shapes
        self.training = False  # dropout and batchnorm behave differently while training
        self.need_dx = True  # the engine turns this off for the first layer: no one needs dL/dinput
        self._scratch: dict[str, np.ndarray] = {}

    def scratch(self, name: str, shape: tuple, dtype) -> np.ndarray:
        """An uninitialised array kept from one call to the next while its shape stays the same.
        (A fresh array of more than 32 MB costs page faults every step: the conv's im2col matrix.)"""
        a = self._scratch.get(name)
        if a is None or a.shape != shape or a.dtype != dtype:
            a = self._scratch[name] = np.empty(shape, dtype)
        return a

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray | None:
        raise NotImplementedError


# layers with weights ----------------------------------------------------------------------
class Conv2dReference(Layer):
    """y[n, f, i, j] = b[f] + sum over c, u, v of W[f, c, u, v] * xpad[n, c, i*sh + u, j*sw + v]

    written as plainly as it goes: for each kernel offset (u, v), the input pixels it meets in
    every window, xpad[:, :, i*sh + u, j*sw + v] over all (i, j), are one strided slice (`hit`),
    so the sum over (c, u, v) is kh*kw whole-batch sums over the channels. The reference that
    Conv2d, the fast version below, is tested against (NumpyEngine(..., reference=True) uses it).
    """

    def __init__(self, layer: S.Conv2d, in_shape, dtype):
        super().__init__(layer.name)
        c, h, w = in_shape
        self.kernel, self.stride = layer.kernel2, layer.stride2
        self.pads = layer.pads(h, w)  # (top, bottom, left, right); 'same' may need one more at the end
        self.params["weight"] = np.zeros((layer.filters, c, *self.kernel), dtype)  # (F, C, kh, kw)
        if layer.bias:
            self.params["bias"] = np.zeros(layer.filters, dtype)  # (F,)

    def forward(self, x):  # (N, C, H, W) -> (N, F, Ho, Wo)
        t, b, l, r = self.pads
        self.x_shape, self.xp = x.shape, np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)))  # zeros around the image
        weight, (kh, kw), (sh, sw) = self.params["weight"], self.kernel, self.stride
        n, _, hp, wp = self.xp.shape
        ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
        y = np.zeros((n, len(weight), ho, wo), x.dtype)
        for u in range(kh):
            for v in range(kw):
                hs, ws = hit(u, v, (ho, wo), self.stride)  # xpad[:, :, i*sh + u, j*sw + v] for every (i, j)
                y += np.einsum("nchw,fc->nfhw", self.xp[:, :, hs, ws], weight[:, :, u, v])
        if "bias" in self.params:
            y += self.params["bias"][:, None, None]
        return y

    def backward(self, dy):  # (N, F, Ho, Wo) -> (N, C, H, W)
        # y = sum over u, v of W[:,:,u,v] . xp[:,:,hs,ws], so dW[:,:,u,v] = dy . xp[..]; dxp[..] += dy . W[:,:,u,v]
        weight, (kh, kw) = self.params["weight"], self.kernel
        dw, dxp = np.zeros_like(weight), np.zeros_like(self.xp)
        for u in range(kh):
            for v in range(kw):
                hs, ws = hit(u, v, dy.shape[2:], self.stride)
                dw[:, :, u, v] = np.einsum("nfhw,nchw->fc", dy, self.xp[:, :, hs, ws])
                dxp[:, :, hs, ws] += np.einsum("nfhw,fc->nchw", dy, weight[:, :, u, v])  # overlapping windows add up
        self.grads["weight"] = dw
        if "bias" in self.params:
            self.grads["bias"] = dy.sum(axis=(0, 2, 3))  # each bias was added to every output pixel
        t, _, l, _ = self.pads
        h, w = self.x_shape[2:]
        return dxp[:, :, t:t + h, l:l + w]  # the padding's gradient belongs to no input: dropped


class Conv2d(Conv2dReference):
    """Conv2dReference's arithmetic (and its parameters, set up by its __init__), tuned for speed (tests/test_engine_reference.py: they agree).

    y[n, f, i, j] = b[f] + sum over c, u, v of W[f, c, u, v] * xpad[n, c, i*sh + u, j*sw + v],
    computed as one matrix product (im2col): every output pixel's receptive field becomes a row
    of `cols`, the filters the columns of W. Inside, images are channels-last (N, H, W, C) in
    memory, so each row of `cols` is a run of contiguous memory; the output is handed on as an
    (N, F, Ho, Wo) view of channels-last memory, which the layers after it keep (NumPy's 'K' order).
    The im2col matrix lives in a scratch buffer kept between steps, and the engine turns `need_dx`
    off for the first layer with weights (no one needs dL/dinput there).
    """

    def forward(self, x):  # (N, C, H, W) -> (N, F, Ho, Wo)
        xh = x.transpose(0, 2, 3, 1)  # (N, H, W, C), free when x is channels-last in memory
        t, b, l, r = self.pads
        if t or b or l or r:
            n, h, w, c = xh.shape
            xp = np.zeros((n, h + t + b, w + l + r, c), x.dtype)  # zero padding around the image
            xp[:, t:t + h, l:l + w] = xh
        else:
            xp = xh
        win = windows(xp, self.kernel, self.stride, axes=(1, 2))  # (N, Ho, Wo, C, kh, kw), a view
        n, ho, wo, c, kh, kw = win.shape
        # im2col: one row per output pixel holding the kh*kw*C inputs it sees (the only big copy)
        cols = self.scratch("cols", (n, ho, wo, kh, kw, c), x.dtype)
        np.copyto(cols, win.transpose(0, 1, 2, 4, 5, 3))
        cols = cols.reshape(n * ho * wo, kh * kw * c)  # (N*Ho*Wo, kh*kw*C)
        weight = self.params["weight"]  # (F, C, kh, kw)
        wmat = weight.transpose(0, 2, 3, 1).reshape(len(weight), -1)  # (F, kh*kw*C), matching cols
        y = cols @ wmat.T  # (N*Ho*Wo, F): the whole batch in one BLAS call
        if "bias" in self.params:
            y += self.params["bias"]
        self.cols, self.xp_shape, self.x_shape = cols, xp.shape, x.shape
        return y.reshape(n, ho, wo, -1).transpose(0, 3, 1, 2)  # (N, F, Ho, Wo), channels-last memory

    def backward(self, dy):  # (N, F, Ho, Wo) -> (N, C, H, W)
        weight = self.params["weight"]  # (F, C, kh, kw)
        f, c, kh, kw = weight.shape
        n, _, ho, wo = dy.shape
        dy2 = dy.transpose(0, 2, 3, 1).reshape(-1, f)  # (N*Ho*Wo, F): row p is output pixel p, as in cols
        # y = cols @ wmat^T + b  =>  dL/dwmat = dy^T @ cols,  dL/db = the sum of dy over all pixels
        dw = (dy2.T @ self.cols).reshape(f, kh, kw, c)  # (F, kh, kw, C)
        self.grads["weight"] = np.ascontiguousarray(dw.transpose(0, 3, 1, 2))  # (F, C, kh, kw)
        if "bias" in self.params:
            self.grads["bias"] = dy2.sum(axis=0)  # (F,)
        if not self.need_dx:
            return None
        # Input pixel (i*sh + u, j*sw + v) met weight W[:, :, u, v] in output pixel (i, j), so it
        # receives dy[n, :, i, j] @ W[:, :, u, v] from there: delta_r = <W_{r+1}, delta_{r+1}>,
        # summed over every output pixel whose window covered it. One matrix product per offset.
        wk = np.ascontiguousarray(weight.transpose(2, 3, 0, 1))  # (kh, kw, F, C)
        dxp = np.zeros(self.xp_shape, dy.dtype)  # (N, Hp, Wp, C)
        for u in range(kh):
            for v in range(kw):
                hs, ws = hit(u, v, (ho, wo), self.stride)  # the input rows and columns offset (u, v) met
                dxp[:, hs, ws] += (dy2 @ wk[u, v]).reshape(n, ho, wo, c)  # (N, Ho, Wo, C)
        t, _, l, _ = self.pads
        h, w = self.x_shape[2:]
        return dxp[:, t:t + h, l:l + w].transpose(0, 3, 1, 2)  # (N, C, H, W); padding's gradient dropped


class Dense(Layer):
    """y = x @ W^T + b, W of shape (out, in)."""

    def __init__(self, layer: S.Dense, in_shape, dtype):
        super().__init__(layer.name)
        self.params["weight"] = np.zeros((layer.units, in_shape[0]), dtype)  # (out, in)
        if layer.bias:
            self.params["bias"] = np.zeros(layer.units, dtype)  # (out,)

    def forward(self, x):  # (N, in) -> (N, out)
        self.x = x
        y = x @ self.params["weight"].T
        if "bias" in self.params:
            y += self.params["bias"]
        return y

    def backward(self, dy):  # (N, out) -> (N, in)
        self.grads["weight"] = dy.T @ self.x  # (out, in): dL/dW[o, i] = sum over n of dy[n, o] x[n, i]
        if "bias" in self.params:
            self.grads["bias"] = dy.sum(axis=0)
        return dy @ self.params["weight"] if self.need_dx else None  # (N, in)


class BatchNorm(Layer):
    """y = gamma * (x - mean) / sqrt(var + eps) + beta, per channel (images) or per feature.

    Training normalises with the batch's statistics and updates the running ones PyTorch's way:
    running = (1 - momentum) * running + momentum * batch, with the unbiased batch variance.
    Evaluation normalises with the running statistics.
    """

    def __init__(self, layer: S.BatchNorm, in_shape, dtype):
        super().__init__(layer.name)
        c = in_shape[0]
        self.eps, self.momentum = layer.eps, layer.momentum
        self.axes = (0, 2, 3) if len(in_shape) == 3 else (0,)  # everything but the channel
        self.bshape = (1, c, 1, 1) if len(in_shape) == 3 else (1, c)  # broadcasts a (C,) vector
        self.params = {"weight": np.ones(c, dtype), "bias": np.zeros(c, dtype)}
        self.buffers = {"running_mean": np.zeros(c, dtype), "running_var": np.ones(c, dtype)}

    def forward(self, x):  # (N, C, H, W) or (N, C) -> same
        m = x.size // x.shape[1]  # values per channel
        if self.training:
            if m < 2:
                raise TegakiError(f"{self.name}: batchnorm needs more than one value per channel while "
                                  "training; train with a larger batch size")
            mean, var = x.mean(axis=self.axes), x.var(axis=self.axes)  # biased variance normalises
            mo = self.momentum
            self.buffers["running_mean"] *= 1 - mo
            self.buffers["running_mean"] += mo * mean
            self.buffers["running_var"] *= 1 - mo
            self.buffers["running_var"] += (mo * m / (m - 1)) * var  # unbiased, as PyTorch keeps it
        else:
            mean, var = self.buffers["running_mean"], self.buffers["running_var"]
        self.inv = (1.0 / np.sqrt(var + self.eps)).reshape(self.bshape)  # (1, C, 1, 1)
        self.xhat = (x - mean.reshape(self.bshape)) * self.inv
        self.batch_stats = self.training  # which statistics normalised: backward differs
        return self.xhat * self.params["weight"].reshape(self.bshape) + self.params["bias"].reshape(self.bshape)

    def backward(self, dy):
        gamma = self.params["weight"].reshape(self.bshape)
        self.grads["weight"] = (dy * self.xhat).sum(axis=self.axes)
        self.grads["bias"] = dy.sum(axis=self.axes)
        if not self.need_dx:
            return None
        if not self.batch_stats:  # fixed statistics: a per-channel affine map
            return dy * (gamma * self.inv)
        # the batch mean and variance depend on every x too; with g = dy * gamma:
        # dL/dx = inv * (g - mean(g) - xhat * mean(g * xhat)), means over the channel's m values
        g = dy * gamma
        mg = g.mean(axis=self.axes, keepdims=True)
        mgx = (g * self.xhat).mean(axis=self.axes, keepdims=True)
        return self.inv * (g - mg - self.xhat * mgx)


# layers without weights ---------------------------------------------------------------------
class MaxPoolReference(Layer):
    """y = the largest value of each kh x kw window, written plainly: the reference MaxPool,
    the fast version below, is tested against (NumpyEngine(..., reference=True) uses it)."""

    def __init__(self, layer: S.MaxPool, in_shape, dtype):
        super().__init__(layer.name)
        self.kernel, self.stride = layer.window()

    def forward(self, x):  # (N, C, H, W) -> (N, C, Ho, Wo)
        win = windows(x, self.kernel, self.stride)  # (N, C, Ho, Wo, kh, kw), a view
        flat = win.reshape(*win.shape[:4], -1)  # (N, C, Ho, Wo, kh*kw): each window's values, row by row
        self.winner = flat.argmax(axis=-1)  # offset u*kw + v of the first maximum (PyTorch's choice on a tie)
        self.x_shape = x.shape
        return flat.max(axis=-1)

    def backward(self, dy):  # (N, C, Ho, Wo) -> (N, C, H, W)
        # d max(x_1, ..., x_k) / d x_i = 1 for the winner i, 0 for the others
        dx = np.zeros(self.x_shape, dy.dtype)
        kh, kw = self.kernel
        for u in range(kh):
            for v in range(kw):
                hs, ws = hit(u, v, dy.shape[2:], self.stride)  # the pixels offset (u, v) holds in each window
                dx[:, :, hs, ws] += dy * (self.winner == u * kw + v)  # a pixel in several windows sums them
        return dx


class MaxPool(MaxPoolReference):
    """MaxPoolReference's arithmetic (and its window, set up by its __init__), tuned for speed (tests/test_engine_reference.py: they agree).

    y = the largest value of each kh x kw window (windows may overlap when stride < size), found
    with one whole-batch maximum per window offset; backward finds each window's first winner with
    boolean arithmetic on preallocated masks instead of an argmax.
    """

    def __init__(self, layer: S.MaxPool, in_shape, dtype):
        super().__init__(layer, in_shape, dtype)
        self.overlap = any(s < k for s, k in zip(self.stride, self.kernel))  # may windows share pixels?

    def forward(self, x):  # (N, C, H, W) -> (N, C, Ho, Wo)
        win = windows(x, self.kernel, self.stride)  # (N, C, Ho, Wo, kh, kw), a view
        y = np.copy(win[..., 0, 0], order="K")  # keeps x's memory order
        for u in range(self.kernel[0]):  # one whole-batch maximum per window offset
            for v in range(self.kernel[1]):
                np.maximum(y, win[..., u, v], out=y)
        self.x, self.y = x, y
        return y

    def backward(self, dy):
        # the max passes its gradient to the input that won and zero to the others; on a tie the
        # first winner in the window (row by row) takes it all, as in PyTorch
        win = windows(self.x, self.kernel, self.stride)
        dx = np.zeros_like(self.x)
        taken = np.zeros_like(self.y, dtype=bool)  # windows whose winner is already found
        won = np.empty_like(taken)
        for u in range(self.kernel[0]):
            for v in range(self.kernel[1]):
                np.equal(win[..., u, v], self.y, out=won)
                np.greater(won, taken, out=won)  # won and not taken (True > False only)
                taken |= won
                hs, ws = hit(u, v, self.y.shape[2:], self.stride)
                if self.overlap:
                    dx[:, :, hs, ws] += dy * won  # a pixel in several windows sums their gradients
                else:
                    np.multiply(dy, won, out=dx[:, :, hs, ws])
        return dx


class AvgPool(Layer):
    """y = the mean of each kh x kw window."""

    def __init__(self, layer: S.AvgPool, in_shape, dtype):
        super().__init__(layer.name)
        self.kernel, self.stride = layer.window()

    def forward(self, x):  # (N, C, H, W) -> (N, C, Ho, Wo)
        win = windows(x, self.kernel, self.stride)  # (N, C, Ho, Wo, kh, kw), a view
        y = np.zeros_like(win[..., 0, 0])
        for u in range(self.kernel[0]):
            for v in range(self.kernel[1]):
                y += win[..., u, v]
        self.x = x
        return y / (self.kernel[0] * self.kernel[1])

    def backward(self, dy):  # each input of a window gets 1/(kh*kw) of the window's gradient
        share = dy / (self.kernel[0] * self.kernel[1])
        dx = np.zeros_like(self.x)  # in x's memory order
        for u in range(self.kernel[0]):
            for v in range(self.kernel[1]):
                hs, ws = hit(u, v, dy.shape[2:], self.stride)
                dx[:, :, hs, ws] += share
        return dx


class Flatten(Layer):
    def forward(self, x):  # (N, C, H, W) -> (N, C*H*W), in C, H, W order
        self.x_shape = x.shape
        return x.reshape(len(x), -1)

    def backward(self, dy):
        return dy.reshape(self.x_shape)


class Dropout(Layer):
    """Inverted dropout: while training, zero each value with probability p and scale the rest by
    1/(1-p), so evaluation (which does nothing) sees the same expected values."""

    def __init__(self, layer: S.Dropout, in_shape, dtype):
        super().__init__(layer.name)
        self.rate = layer.rate
        self.rng = np.random.default_rng(0)  # the engine hands every dropout layer its generator

    def forward(self, x):
        if not self.training or self.rate == 0:
            self.mask = None
            return x
        keep = self.rng.random(x.shape, dtype=x.dtype) >= self.rate
        self.mask = keep * x.dtype.type(1.0 / (1.0 - self.rate))  # 0 or 1/(1-p)
        return x * self.mask

    def backward(self, dy):
        return dy if self.mask is None else dy * self.mask


# activations --------------------------------------------------------------------------------
class Sigmoid(Layer):
    def forward(self, x):
        with np.errstate(over="ignore"):  # exp(-x) = inf for very negative x gives exactly 0
            self.y = 1.0 / (1.0 + np.exp(-x))
        return self.y

    def backward(self, dy):
        return dy * self.y * (1.0 - self.y)  # sigma'(x) = sigma(x) (1 - sigma(x))


class Tanh(Layer):
    def forward(self, x):
        self.y = np.tanh(x)
        return self.y

    def backward(self, dy):
        return dy * (1.0 - self.y * self.y)  # tanh'(x) = 1 - tanh(x)^2


class ReLU(Layer):
    def forward(self, x):
        self.mask = x > 0
        return np.maximum(x, 0)

    def backward(self, dy):
        return dy * self.mask  # 1 where x > 0, else 0 (0 at x = 0, as PyTorch)


class LeakyReLU(Layer):
    def __init__(self, layer: S.LeakyReLU, in_shape, dtype):
        super().__init__(layer.name)
        self.slope = layer.slope

    def forward(self, x):
        self.mask = x > 0
        return np.where(self.mask, x, self.slope * x)

    def backward(self, dy):
        return np.where(self.mask, dy, self.slope * dy)  # 1 where x > 0, else the slope


class ELU(Layer):
    def __init__(self, layer: S.ELU, in_shape, dtype):
        super().__init__(layer.name)
        self.alpha = layer.alpha

    def forward(self, x):
        self.x = x
        return np.where(x > 0, x, self.alpha * np.expm1(np.minimum(x, 0)))

    def backward(self, dy):  # d/dx alpha (e^x - 1) = alpha e^x for x <= 0; 1 above
        return np.where(self.x > 0, dy, dy * (self.alpha * np.exp(np.minimum(self.x, 0))))


class Maxout(Layer):
    """Max over groups of k consecutive channels (or features): C -> C / k."""

    def __init__(self, layer: S.Maxout, in_shape, dtype):
        super().__init__(layer.name)
        self.k = layer.pieces

    def forward(self, x):  # (N, C, ...) -> (N, C/k, ...)
        self.g = x.reshape(len(x), x.shape[1] // self.k, self.k, *x.shape[2:])  # (N, C/k, k, ...)
        self.y = self.g.max(axis=2)
        return self.y

    def backward(self, dy):  # the largest piece gets the gradient; ties share it (as torch.amax)
        share = (self.g == self.y[:, :, None]).astype(dy.dtype)  # (N, C/k, k, ...): 1 at the maximum
        share /= share.sum(axis=2, keepdims=True)
        return (share * dy[:, :, None]).reshape(len(dy), -1, *dy.shape[2:])


class Softmax(Layer):
    """Identity here: the network hands out logits; `cross_entropy` applies the softmax."""

    def forward(self, x):
        return x

    def backward(self, dy):
        return dy


def cross_entropy(logits: np.ndarray, y: np.ndarray, smoothing: float = 0.0,
                  targets: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(logits) against labels y, and its gradient dL/dlogits.

    With label smoothing s the target is q = (1 - s) one_hot(y) + s / K (PyTorch's definition).
    `targets` (N, K), rows summing to 1, is the target distribution itself (distillation); y and s are unused.
    """
    n, k = logits.shape
    z = logits - logits.max(axis=1, keepdims=True)  # (N, K); softmax is unchanged by the shift
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))  # log softmax
    if targets is not None:
        q = np.asarray(targets, logits.dtype)
    else:
        q = np.full((n, k), smoothing / k, logits.dtype)  # (N, K) target distribution
        q[np.arange(n), y] += 1.0 - smoothing
    loss = float(-(q * logp).sum()) / n
    return loss, (np.exp(logp) - q) / n  # d/dz of -sum q log softmax(z) is softmax(z) - q


def distill_loss(logits: np.ndarray, y: np.ndarray, smoothing: float, targets: np.ndarray, weight: float,
                 temperature: float) -> tuple[float, np.ndarray]:
    """Hinton, Vinyals and Dean's (2015) loss and its gradient dL/dlogits: with w = weight and T = temperature,
    L = (1 - w) CE(softmax(z), labels smoothed) + w T^2 KL(targets || softmax(z / T)), the targets being the
    teachers' softmax(their logits / T). The T^2 keeps the soft part's gradient, w T (softmax(z / T) - targets),
    about as large as the hard part's whatever T is. KL is the soft cross-entropy less the targets' own entropy:
    the same gradient, and a loss that reaches 0 where the network matches its teachers."""
    hard, d_hard = cross_entropy(logits, y, smoothing)
    soft, d_soft = cross_entropy(logits / temperature, y, targets=targets)  # d_soft is dL/d(z / T)
    q = np.asarray(targets, np.float64)
    soft += float(np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0).sum()) / len(q)  # - entropy: KL
    t2 = temperature * temperature
    return (1 - weight) * hard + weight * t2 * soft, (1 - weight) * d_hard + weight * temperature * d_soft


# joining layers: forward takes several inputs; backward hands back one gradient per input ----------
class Add(Layer):
    """y = x_1 + x_2 + ...: the residual connection."""

    def forward(self, *xs):  # k arrays of one shape -> that shape
        self.k = len(xs)
        y = xs[0] + xs[1]
        for x in xs[2:]:
            y = y + x
        return y

    def backward(self, dy):  # dy/dx_i = 1: every input gets dL/dy unchanged
        return (dy,) * self.k


class Concat(Layer):
    """y = the inputs side by side along axis 1 (the channels of images, the features of vectors)."""

    def forward(self, *xs):  # (N, C_i, ...) -> (N, sum of C_i, ...)
        self.sizes = [x.shape[1] for x in xs]
        return np.concatenate(xs, axis=1)

    def backward(self, dy):  # each input gets back the slice of dL/dy its channels went to
        return tuple(np.split(dy, np.cumsum(self.sizes)[:-1], axis=1))


class GlobalAvgPool(Layer):
    """y[n, c] = the mean of channel c over all H x W pixels."""

    def forward(self, x):  # (N, C, H, W) -> (N, C)
        self.x_shape = x.shape
        return x.mean(axis=(2, 3))

    def backward(self, dy):  # (N, C) -> (N, C, H, W): each pixel gets 1/(H*W) of its channel's gradient
        h, w = self.x_shape[2:]
        return np.ascontiguousarray(np.broadcast_to((dy / (h * w))[:, :, None, None], self.x_shape))


# one entry per layer kind: spec record type -> NumPy layer class
LAYER_CLASSES: dict[type, type[Layer]] = {
    S.Conv2d: Conv2d, S.Dense: Dense, S.BatchNorm: BatchNorm, S.MaxPool: MaxPool, S.AvgPool: AvgPool,
    S.Flatten: Flatten, S.Dropout: Dropout, S.Sigmoid: Sigmoid, S.Tanh: Tanh, S.ReLU: ReLU,
    S.LeakyReLU: LeakyReLU, S.ELU: ELU, S.Maxout: Maxout, S.Softmax: Softmax,
    S.Add: Add, S.Concat: Concat, S.GlobalAvgPool: GlobalAvgPool,
}
REFERENCE_CLASSES: dict[type, type[Layer]] = {S.Conv2d: Conv2dReference, S.MaxPool: MaxPoolReference}


def build_layer(layer: S.Layer, in_shape, dtype, reference: bool = False) -> Layer:
    """The NumPy layer for one spec record, with zero weights (the engine loads the real ones);
    `reference`: the plain version where a layer has a speed-tuned one."""
    cls = (reference and REFERENCE_CLASSES.get(type(layer))) or LAYER_CLASSES.get(type(layer))
    if cls is None:
        raise TegakiError(f"the numpy engine has no implementation of layer type {layer.type!r}; use --engine torch")
    if cls.__init__ is Layer.__init__:
        return cls(layer.name)
    return cls(layer, in_shape, dtype)
