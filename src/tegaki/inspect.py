"""Looking inside a trained network, as arrays: filters, feature maps, activations, saliency,
occlusion, hidden features and 2-D embeddings.

Everything goes through the engine interface (engines/__init__.py), so it works the same for
a run loaded in the torch engine or the numpy engine:

    look = Inspector(predictor)                     # a tegaki.predict.Predictor
    x = look.input(image_uint8)                     # (28, 28) uint8 -> (1, C, H, W) normalised
    maps = look.feature_maps(x)                     # conv/pool layer -> (C, H, W)
    sal = look.saliency(image_uint8, target)        # d logit[target] / d pixel, (H, W)
    occ = look.occlusion(image_uint8, target)       # drop in p(target) when a patch is blanked
    feats = look.features(images, ["tanh3"])        # layer -> (N, features), batched

Pictures of these arrays are drawn by tegaki.figures and tegaki.diagram (and embedded by tegaki.report).
"""

from __future__ import annotations

import numpy as np

from tegaki import spec as S
from tegaki.errors import TegakiError

OCCLUSION_MEASURES = ("margin", "logp", "p")

# layers that keep a block's representation going (they follow a conv or dense layer)
_BLOCK_TAIL = (S.MaxPool, S.AvgPool, S.Activation, S.Dropout, S.BatchNorm)


# the spec's structure ------------------------------------------------------------------------
def conv_layers(spec: S.Spec) -> list[str]:
    return [l.name for l in spec.layers if isinstance(l, S.Conv2d)]


def map_layers(spec: S.Spec) -> list[str]:
    """Layers whose output is a stack of feature maps worth showing: every conv, pool, add and concat layer."""
    return [l.name for l, s in zip(spec.layers, spec.shapes())
            if isinstance(l, (S.Conv2d, S.MaxPool, S.AvgPool, S.Add, S.Concat)) and len(s) == 3]


def dense_layers(spec: S.Spec) -> list[str]:
    return [l.name for l in spec.layers if isinstance(l, S.Dense)]


def logits_layer(spec: S.Spec) -> str:
    """The layer whose output is the logits: the last one, or the one before a final softmax."""
    layers = spec.layers
    return layers[-2].name if isinstance(layers[-1], S.Softmax) and len(layers) > 1 else layers[-1].name


def block_end(spec: S.Spec, name: str, tail: tuple[type, ...] = _BLOCK_TAIL) -> str:
    """The last layer of the block a conv or dense layer starts: the layers of the `tail` kinds (its pooling,
    activation ...) that follow it, each reading the one before."""
    i, src = [l.name for l in spec.layers].index(name), spec.sources()
    while i + 1 < len(spec.layers) and isinstance(spec.layers[i + 1], tail) \
            and not isinstance(spec.layers[i + 1], S.Softmax) and src[i + 1] == (spec.layers[i].name,):
        i += 1  # (it reads layer i alone; in a network with branches a layer may read another)
    return spec.layers[i].name


def hidden_layers(spec: S.Spec) -> list[tuple[str, str]]:
    """(block start, block end) for every conv or dense layer but the output layer.

    The block end is where the representation is read: LeNet's conv1 -> pool1 -> tanh1 gives
    ("conv1", "tanh1"), its dense1 -> tanh3 gives ("dense1", "tanh3").
    """
    last = logits_layer(spec)
    out = []
    for l in spec.layers:
        if isinstance(l, (S.Conv2d, S.Dense)) and l.name != last:
            out.append((l.name, block_end(spec, l.name)))
    return out


def penultimate(spec: S.Spec) -> str | None:
    """The layer feeding the output layer (skipping dropout and flatten); None: the input itself."""
    names = [l.name for l in spec.layers]
    srcs = spec.sources()  # follow what each layer reads: in a network with branches, not always the one before
    n = srcs[names.index(logits_layer(spec))][0]
    while n != "input" and isinstance(spec.layers[names.index(n)], (S.Dropout, S.Flatten)):
        n = srcs[names.index(n)][0]
    return None if n == "input" else n


def check_layer(spec: S.Spec, name: str) -> str:
    names = [l.name for l in spec.layers]
    if name in ("pixels", "input") or name in names:
        return name
    raise TegakiError(f"no layer named {name!r} in {spec.name}; choose pixels or one of: {', '.join(names)}")


def layer_shapes(spec: S.Spec) -> dict[str, tuple[int, ...]]:
    return {l.name: s for l, s in zip(spec.layers, spec.shapes())}


def param_counts(spec: S.Spec) -> dict[str, int]:
    return {l.name: n for l, n in zip(spec.layers, spec.layer_params())}


# filters ---------------------------------------------------------------------------------------
def filter_tiles(weights: dict[str, np.ndarray], layer: str) -> np.ndarray:
    """A conv layer's kernels as (out filters, in channels, kh, kw)."""
    key = f"{layer}.weight"
    if key not in weights or weights[key].ndim != 4:
        raise TegakiError(f"{layer} is not a conv layer (no 4-D weight); conv layers hold the filters")
    return np.asarray(weights[key], np.float32)


def mosaic(tiles: np.ndarray, cols: int | None = None, pad: int = 1, normalise: str = "each") -> np.ndarray:
    """(n, h, w) tiles -> one 2-D image with NaN gutters, tiles in row-major order.

    normalise: "each" scales every tile to [-1, 1] by its own largest |value| (shapes of filters),
    "all" by the largest over all tiles (their relative strength), "none" keeps values.
    """
    tiles = np.asarray(tiles, np.float32)
    n, h, w = tiles.shape
    if normalise == "each":
        m = np.abs(tiles).reshape(n, -1).max(axis=1)
        tiles = tiles / np.where(m > 0, m, 1)[:, None, None]
    elif normalise == "all":
        m = float(np.abs(tiles).max())
        tiles = tiles / (m if m > 0 else 1.0)
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    out = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad), np.nan, np.float32)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * (h + pad): r * (h + pad) + h, c * (w + pad): c * (w + pad) + w] = tiles[i]
    return out


def filter_mosaic(weights: dict[str, np.ndarray], layer: str) -> tuple[np.ndarray, int, int]:
    """(image, number of tiles, columns), each filter scaled to [-1, 1] by its largest |weight|.

    One input channel (a first layer): a grid of its filters. Several: one column per filter,
    one row per input channel (a filter's channels stay on one scale, so they compare).
    """
    w = filter_tiles(weights, layer)  # (F, C, kh, kw)
    f, c, kh, kw = w.shape
    if c == 1:
        cols = int(np.ceil(np.sqrt(f * 1.6)))
        return mosaic(w[:, 0], cols), f, cols
    m = np.abs(w).reshape(f, -1).max(axis=1)
    w = w / np.where(m > 0, m, 1)[:, None, None, None]
    tiles = w.transpose(1, 0, 2, 3).reshape(c * f, kh, kw)  # channel-major: row = channel, column = filter
    return mosaic(tiles, f, normalise="none"), f * c, f


# the Inspector ----------------------------------------------------------------------------------
class Inspector:
    """Arrays about one trained network, computed through its engine."""

    def __init__(self, predictor):
        self.p = predictor
        self.spec: S.Spec = predictor.spec
        self.engine = predictor.engine
        if not self.engine.has_activations:
            raise TegakiError(f"the {self.engine.name} engine cannot show hidden layers "
                              "(it computes logits only); use --engine torch or numpy")
        self.logits_name = logits_layer(self.spec)

    # inputs
    def input(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim == 2:
            images = images[None]
        want = self.spec.input_shape
        if int(np.prod(images.shape[1:])) != int(np.prod(want)):
            raise TegakiError(f"the network takes {'x'.join(map(str, want))} inputs, the image is "
                              f"{'x'.join(map(str, images.shape[1:]))}")
        return self.p.prepare(images)  # (N, C, H, W) float32

    # forward
    def activations(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Every layer's output for a few images, by layer name, batch axis kept."""
        return self.engine.activations(self.input(images))

    def logits(self, images: np.ndarray) -> np.ndarray:
        return self.engine.logits(self.input(images))

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """The calibrated probabilities, softmax(logits / T), as predict and every answer show them."""
        return self.p.calibrated(self.logits(images))[0]

    def feature_maps(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Every conv and pool layer's output for one image: layer -> (C, H, W)."""
        acts = self.activations(image)
        return {n: acts[n][0] for n in map_layers(self.spec)}

    def dense_activations(self, image: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """(label, values) for every dense layer, read after its activation; then the output
        probabilities. LeNet: ("dense1 + tanh3", 500 values), ("dense2 (logits)", 10), ("probabilities", 10)."""
        acts = self.activations(image)
        out = []
        for name in dense_layers(self.spec):
            end = name if name == self.logits_name else block_end(self.spec, name)
            label = f"{name} (logits)" if name == self.logits_name else (name if end == name else f"{name} + {end}")
            out.append((label, acts[end][0].ravel()))
        out.append(("probabilities", self.p.calibrated(acts[self.logits_name][:1].reshape(1, -1))[0][0]))
        return out

    def features(self, images: np.ndarray, layers: list[str], batch_size: int = 1000,
                 with_logits: bool = False) -> dict[str, np.ndarray]:
        """Flattened outputs of `layers` ("pixels" for the input) for many images: layer -> (N, F).

        Computed in batches so a conv layer's maps for 60,000 digits never sit in memory at once
        beyond their flattened float32 copy. `with_logits` adds the logits under "logits".
        """
        n = len(images)
        out: dict[str, list[np.ndarray]] = {k: [] for k in layers}
        if with_logits:
            out["logits"] = []
        for i in range(0, n, batch_size):
            x = self.input(images[i:i + batch_size])  # (B, C, H, W)
            acts = self.engine.activations(x) if any(k not in ("pixels", "input") for k in out) else {}
            for k in out:
                if k in ("pixels", "input"):
                    a = x
                elif k == "logits":
                    a = acts[self.logits_name]
                else:
                    a = acts[k]
                out[k].append(np.asarray(a, np.float32).reshape(len(x), -1))
        return {k: (np.concatenate(v) if v else np.zeros((0, 0), np.float32)) for k, v in out.items()}

    # attribution
    def saliency(self, images: np.ndarray, target) -> np.ndarray:
        """d logit[target] / d input for each image, shape (N, C, H, W) in normalised input units.

        Uses the engine's input_gradient; an engine without one gets central finite differences.
        """
        x = self.input(images)
        target = np.broadcast_to(np.asarray(target, np.int64), (len(x),)).copy()
        if self.engine.has_gradients:
            return np.asarray(self.engine.input_gradient(x, target), np.float32)
        return self._finite_difference(x, target)

    def _finite_difference(self, x: np.ndarray, target: np.ndarray, eps: float = 1e-2) -> np.ndarray:
        g = np.zeros_like(x)
        d = int(np.prod(x.shape[1:]))
        for n in range(len(x)):
            base = np.repeat(x[n:n + 1].reshape(1, d), 2 * d, axis=0)  # (2D, D)
            idx = np.arange(d)
            base[idx, idx] += eps
            base[d + idx, idx] -= eps
            z = self.engine.logits(base.reshape(2 * d, *x.shape[1:]))[:, target[n]].astype(np.float64)
            g[n] = ((z[:d] - z[d:]) / (2 * eps)).reshape(x.shape[1:])
        return g

    def occlusion(self, image: np.ndarray, target: int, patch: int = 6, stride: int = 2,
                  measure: str = "margin") -> np.ndarray:
        """How much the network's belief in `target` drops when a patch x patch square of the
        (H, W) uint8 image is blanked (set to 0, the background), averaged over every patch
        covering a pixel. Positive: the pixel supports target.

        measure "margin" (default): the drop in the target's logit minus the best other logit, which
        still moves when the network is 99.99% sure (and a drop by the whole margin flips the
        decision); "logp": the drop in log p(target); "p": in p(target) itself (Zeiler & Fergus),
        flat for confident predictions.
        """
        image = np.asarray(image)
        if image.ndim != 2:
            raise TegakiError(f"occlusion needs one 2-D image, got shape {image.shape}")
        if measure not in OCCLUSION_MEASURES:
            raise TegakiError(f"occlusion measure must be one of {', '.join(OCCLUSION_MEASURES)}, got {measure!r}")
        h, w = image.shape
        if patch > min(h, w) or patch < 1 or stride < 1:
            raise TegakiError(f"occlusion patch {patch} does not fit a {h}x{w} image")
        tops = list(range(0, h - patch + 1, stride))
        lefts = list(range(0, w - patch + 1, stride))
        batch = np.repeat(image[None], len(tops) * len(lefts) + 1, axis=0)  # (K + 1, H, W); last: unoccluded
        k = 0
        for t in tops:
            for l in lefts:
                batch[k, t:t + patch, l:l + patch] = 0
                k += 1
        z = self.logits(batch).astype(np.float64)  # (K + 1, classes)
        if measure == "margin":
            others = np.delete(z, target, axis=1)
            score = z[:, target] - others.max(axis=1)
        elif measure == "logp":
            zmax = z.max(axis=1, keepdims=True)
            score = z[:, target] - (zmax[:, 0] + np.log(np.exp(z - zmax).sum(axis=1)))  # log softmax
        else:
            score = self.p.calibrated(z)[0][:, target]
        drop = score[-1] - score[:-1]  # (K,)
        total = np.zeros((h, w), np.float64)
        count = np.zeros((h, w), np.float64)
        k = 0
        for t in tops:
            for l in lefts:
                total[t:t + patch, l:l + patch] += drop[k]
                count[t:t + patch, l:l + patch] += 1
                k += 1
        return (total / np.maximum(count, 1)).astype(np.float32)


# embeddings --------------------------------------------------------------------------------------
def pca_2d(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, F) -> (N, 2) projection on the two main principal axes, and their explained variance ratios."""
    from sklearn.decomposition import PCA
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # see tsne_2d
        pca = PCA(n_components=2, random_state=0)
        z = pca.fit_transform(np.asarray(features, np.float32))
    return z, pca.explained_variance_ratio_


TSNE_MIN = 10  # the fewest digits a t-SNE map is drawn from: fewer make a map of nothing, perplexity or not


def tsne_perplexity(n: int) -> float:
    """The perplexity t-SNE runs with for n points: the usual 30, less for a few points (it must stay below n)."""
    return float(min(30, max(2, (n - 1) / 3)))


def tsne_2d(features: np.ndarray, seed: int = 0, iterations: int = 500) -> np.ndarray:
    """(N, F) -> (N, 2) t-SNE map (first reduced to 50 dimensions by PCA, as is usual).

    500 iterations (scikit-learn's default is 1,000) already separate MNIST's classes cleanly
    and take half the time. It runs on one thread: a few thousand points gain little from more,
    and OpenMP threads that wait for a busy CPU made it three times slower on a shared machine.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    f = np.asarray(features, np.float32)
    if f.shape[1] > 50 and len(f) > 50:  # PCA to 50 needs at least 50 points
        f = PCA(n_components=50, random_state=seed).fit_transform(f)
    perplexity = tsne_perplexity(len(f))
    steps = {"max_iter" if "max_iter" in TSNE().get_params() else "n_iter": iterations}  # renamed in 1.5
    with threadpool_limits(1):
        return TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                    random_state=seed, **steps).fit_transform(f)


def sample_indices(total: int, n: int, seed: int = 0) -> np.ndarray:
    """n indices drawn at random without replacement from range(total), sorted (all when n >= total)."""
    if n >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).permutation(total)[:n])
