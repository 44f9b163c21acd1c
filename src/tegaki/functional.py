"""The functional form of a network (the Keras lecture's second way): call layers on symbols.

    import tegaki as tg
    x = tg.Input((1, 28, 28))
    y = tg.ReLU()(tg.Conv2d(9, 3, padding="same")(x))
    z = tg.ReLU()(tg.Conv2d(9, 3, padding="same")(y))
    y = tg.Add()([y, z])                                  # a residual connection
    out = tg.Softmax()(tg.Dense(10)(tg.GlobalAvgPool()(y)))
    model = tg.Model(x, out)                              # a tg.Sequential: summary, fit, save ...

Calling a layer only records which layer reads which (tegaki.spec.Symbol). `Model` follows the
output back to the input, orders the layers as they were called (a layer's inputs always exist
before it), names them as a Spec does (conv1, relu1 ...), writes `inputs` where a layer reads
something other than the previous layer's output, and builds the Spec, which checks the shapes.
So a chain written this way is exactly its Sequential twin, spec and summary alike.
"""

from __future__ import annotations

import dataclasses

from tegaki import spec as S
from tegaki.errors import TegakiError
from tegaki.model import Sequential

__all__ = ["Input", "Model", "to_spec"]


def Input(shape=(1, 28, 28)) -> S.Symbol:  # noqa: N802 (named as Keras names it)
    """The network's input, (channels, height, width) or (features,): call the first layer on it."""
    ok = isinstance(shape, (tuple, list)) and len(shape) in (1, 3) and all(
        isinstance(i, int) and not isinstance(i, bool) and 0 < i <= S.MAX_INT for i in shape)
    if not ok:
        raise TegakiError(f"Input shape must be (channels, height, width) or (features,) of positive integers, "
                          f"got {shape!r}")
    return S.Symbol(None, (), tuple(shape))


def _reachable(outputs: S.Symbol) -> list[S.Symbol]:
    """Every symbol the output depends on, in the order they were made."""
    seen: dict[int, S.Symbol] = {}
    stack = [outputs]
    while stack:
        s = stack.pop()
        if id(s) not in seen:
            seen[id(s)] = s
            stack.extend(s.parents)
    return sorted(seen.values(), key=lambda s: s.order)


def to_spec(inputs: S.Symbol, outputs: S.Symbol, name: str = "model", normalize: str = "standard",
            train: dict | None = None) -> S.Spec:
    """The Spec of the layers between `inputs` (a tg.Input) and `outputs` (the last layer's result)."""
    if not isinstance(inputs, S.Symbol) or inputs.layer is not None:
        raise TegakiError(f"Model(inputs, outputs): inputs must be the tg.Input(...) the network starts from, "
                          f"got {type(inputs).__name__}")
    if not isinstance(outputs, S.Symbol) or outputs.layer is None:
        raise TegakiError("Model(inputs, outputs): outputs must be a layer's result, such as tg.Softmax()(y)")
    syms = _reachable(outputs)
    starts = [s for s in syms if s.layer is None]
    if starts != [inputs]:
        raise TegakiError("Model(inputs, outputs): the output is not computed from this input alone; "
                          "build every layer from the tg.Input given to Model")
    calls = [s for s in syms if s.layer is not None]
    records: dict[int, S.Layer] = {}
    for s in calls:
        if id(s.layer) in records:
            raise TegakiError(f"a {s.layer.type} layer is called twice; tegaki layers do not share weights: "
                              "make a new layer for each call")
        records[id(s.layer)] = dataclasses.replace(s.layer)  # a copy: the user's layer stays as it is
    layers = [records[id(s.layer)] for s in calls]
    S.name_layers(layers)
    for s, layer in zip(calls, layers):
        layer.inputs = tuple("input" if p.layer is None else records[id(p.layer)].name for p in s.parents)
    return S.Spec(input_shape=inputs.shape, layers=layers, name=name, normalize=normalize, train=dict(train or {}))


class Model(Sequential):
    """A network written in the functional form: `tg.Model(tg_input, output)`; see tegaki.functional.

    It is a tg.Sequential built from the spec the calls describe, so it trains, predicts, saves and
    shows its summary exactly as one does (the summary adds a "Connected to" column for branches)."""

    def __init__(self, inputs: S.Symbol, outputs: S.Symbol, name: str = "model", classes=None,
                 normalize: str = "standard"):
        super().__init__(to_spec(inputs, outputs, name, normalize), name=name, classes=classes)
