"""Batch-norm refresh: recompute every batch-norm layer's statistics on the training images as they are.

While a network trains, each batch-norm layer keeps a running (momentum) average of the mean and
variance of its inputs, taken on the batches training sees: distorted by augmentation, with dropout
on, and from weights that change at every step. A test image is none of these. `refresh` replaces
those averages with the population statistics that evaluation itself will meet:

    for each batch-norm layer, in the order the layers run:
        run the network in evaluation mode (dropout off, the earlier batch norms already refreshed)
        over the images, undistorted, and take the mean and the (biased) variance of the layer's
        input, per channel, over every image and position;
        store them as the layer's running mean and variance.

The order matters: a layer's input depends on the statistics of the batch norms before it. The
variance shift this removes is worst where dropout feeds a batch norm (Li et al. 2019,
"Understanding the Disharmony between Dropout and Batch Normalization by Variance Shift"); the
same recomputation, on the training data, is the last step of SWA (Izmailov et al. 2018).

It uses only the interface every engine offers (prepare, activations, get/set_weights), so the
torch and numpy engines refresh alike. `train` runs it after the last epoch where the recipe says
`bn_refresh = true` (`tegaki train --bn-refresh`, `fit(..., bn_refresh=True)`).
"""

from __future__ import annotations

import numpy as np

from tegaki.spec import BatchNorm, Spec

CHUNK = 500  # images per partial forward pass (at most the engine's inference batch); faster here than 1,000 or 2,000


def layers(spec: Spec) -> list[tuple[str, str]]:
    """(batch-norm layer, the layer whose output it normalises: a name, or "input"), in running order."""
    return [(l.name, src[0]) for l, src in zip(spec.layers, spec.sources()) if isinstance(l, BatchNorm)]


def refresh(engine, x, chunk: int = CHUNK) -> int:
    """Set every batch-norm layer's running statistics to the population statistics of the images `x`, prepared
    by the engine (engine.prepare(images, None, norm)[0]: normalised, undistorted), as evaluation sees them.
    Returns the number of layers refreshed. Interrupted (Ctrl-C, an error), the engine keeps its old statistics."""
    todo = layers(engine.spec)
    if not todo or not len(x):
        return 0
    chunk = max(1, min(chunk, getattr(engine, "batch_cap", chunk)))  # as evaluation does for networks with huge maps
    old = engine.get_weights()
    weights = dict(old)
    try:
        for name, src in todo:
            n, mean, m2 = 0, 0.0, 0.0  # values seen per channel, their mean, their summed squared deviations
            for i in range(0, len(x), chunk):
                a = _numpy(x[i:i + chunk]) if src == "input" else engine.activations(x[i:i + chunk], only=src)[src]
                axes = (0, 2, 3) if a.ndim == 4 else (0,)
                k = a.size // a.shape[1]
                m = a.mean(axis=axes, dtype=np.float64)
                dev = a - m.astype(a.dtype).reshape((1, -1) + (1,) * (a.ndim - 2))  # one copy, in a's own dtype
                # the squared deviations from the chunk's own mean, summed in float64, corrected for the float32 mean
                m2_chunk = np.square(dev, out=dev).sum(axis=axes, dtype=np.float64) - \
                    k * np.square(m - m.astype(a.dtype).astype(np.float64))
                del dev
                d = m - mean  # two sets' statistics joined (Chan et al.): no cancellation, however large the mean
                m2 = m2 + m2_chunk + d * d * n * k / (n + k)
                mean = mean + d * k / (n + k)
                n += k
            dtype = weights[f"{name}.running_mean"].dtype
            weights[f"{name}.running_mean"] = np.asarray(mean, dtype)
            weights[f"{name}.running_var"] = np.asarray(np.maximum(m2, 0.0) / n, dtype)  # biased: the population's
            engine.set_weights(weights)  # the next layer's input depends on these
    except BaseException:
        engine.set_weights(old)
        raise
    return len(todo)


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
