"""A network diagram drawn with matplotlib alone (no graphviz or other system binaries).

One box per layer, left to right, input first: the box's colour says its kind (conv, pool,
dense, activation ...), its height grows with the size of the layer's output, and the text
gives the layer's name, what it does, its output shape and its parameter count. A layer that
reads the previous one gets a straight arrow from it; a branch (a layer reading an earlier
output, as the add of a residual block does) is an arc over the boxes in between.

    fig = draw(spec, title="lenet")          # a matplotlib Figure
    figures.save(fig, "diagram.png")
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from tegaki import spec as S
from tegaki.figures import new_figure, plain

COLOURS = {
    "input": "#d9d9d9", "conv2d": "#8ec1e6", "maxpool": "#f5c26b", "avgpool": "#f5c26b",
    "dense": "#9fd89a", "flatten": "#e6e6e6", "dropout": "#f0d0d0", "batchnorm": "#d7c4ec",
    "softmax": "#f39c9c", "add": "#c9e7e1", "concat": "#c9e7e1", "globalavgpool": "#f5c26b",
}
ACTIVATION_COLOUR = "#fbe8a6"


def _describe_conv(layer: S.Conv2d) -> str:
    extra = []
    if layer.stride2 != (1, 1):
        extra.append(f"stride {shape_text(layer.stride2)}")
    if layer.padding != "valid":
        extra.append(f"pad {layer.padding}")
    # one line each: "stride 2x2, pad same" on one line is wider than the box
    return "\n".join([f"conv {layer.filters}@{shape_text(layer.kernel2)}", *extra])


def _describe_pool(layer: S._Pool) -> str:
    k, s = layer.window()
    txt = f"{'max' if isinstance(layer, S.MaxPool) else 'avg'} {shape_text(k)}"
    return txt + (f"\nstride {shape_text(s)}" if s != k else "")


# the layer kinds with settings worth a line; every other kind is described by its type name
DESCRIBE = {
    S.Conv2d: _describe_conv,
    S.MaxPool: _describe_pool,
    S.AvgPool: _describe_pool,
    S.Dense: lambda layer: f"dense {layer.units}",
    S.Dropout: lambda layer: f"dropout {layer.rate:g}",
    S.LeakyReLU: lambda layer: f"leaky relu {layer.slope:g}",
    S.Maxout: lambda layer: f"maxout {layer.pieces}",
}


def describe(layer: S.Layer) -> str:
    """What a layer does, in a few characters: 'conv 20@5x5', 'max 2x2', 'dense 500' ..."""
    how = DESCRIBE.get(type(layer))
    return how(layer) if how else layer.type.replace("_", " ")


def shape_text(shape) -> str:
    return "x".join(str(int(s)) for s in shape)


ARC_Y = 1.85  # where skip arcs leave and land: above the tallest box's name (its top is at 1.25, its name to 1.6)


def _arrows(ax, spec: S.Spec, step: float, width: float) -> int:
    """A straight arrow from the previous box, or an arc from an earlier one, into each layer's box;
    returns the height (in boxes skipped) of the tallest arc."""
    index = {"input": 0, **{l.name: i + 1 for i, l in enumerate(spec.layers)}}
    tallest = 0
    for i, src in enumerate(spec.sources(), start=1):
        for n in dict.fromkeys(src):  # each input once, in order
            j = index[n]
            if j == i - 1:
                ax.add_patch(FancyArrowPatch(((i - 1) * step + width / 2, 0), (i * step - width / 2, 0),
                                             arrowstyle="-|>", mutation_scale=9, color="#444444", linewidth=0.8))
                continue
            span = i - j
            tallest = max(tallest, min(span, 6))
            ax.add_patch(FancyArrowPatch((j * step, ARC_Y), (i * step, ARC_Y),
                                         connectionstyle=f"arc3,rad={-min(0.45, 0.9 / span):.2f}",
                                         arrowstyle="-|>", mutation_scale=9, color="#2a7f6f", linewidth=0.9))
    return tallest


def draw(spec: S.Spec, title: str = "") -> Figure:
    """The network as a row of boxes, input first (see the module's docstring), as a Figure."""
    boxes = [("input", "input", spec.input_shape, 0, COLOURS["input"])]
    for layer, shape, n in zip(spec.layers, spec.shapes(), spec.layer_params()):
        colour = COLOURS.get(layer.type, ACTIVATION_COLOUR if isinstance(layer, S.Activation) else "#eeeeee")
        boxes.append((layer.name, describe(layer), shape, n, colour))
    sizes = [int(np.prod(b[2])) for b in boxes]
    top = math.log10(max(sizes) + 1)
    step, width = 1.35, 1.12
    fig = new_figure((step * len(boxes) + 0.4, 3.5))
    ax = fig.subplots()
    for i, (name, what, shape, n, colour) in enumerate(boxes):
        h = 0.7 + 1.8 * math.log10(sizes[i] + 1) / max(top, 1e-9)
        x = i * step
        ax.add_patch(FancyBboxPatch((x - width / 2, -h / 2), width, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                    facecolor=colour, edgecolor="#555555", linewidth=0.8))
        ax.text(x, h / 2 + 0.12, plain(name), ha="center", va="bottom", fontsize=8.5, fontweight="bold")
        ax.text(x, 0, plain(what), ha="center", va="center", fontsize=8)
        ax.text(x, -h / 2 - 0.12, shape_text(shape), ha="center", va="top", fontsize=8)
        ax.text(x, -h / 2 - 0.42, f"{n:,} params" if n else "-", ha="center", va="top", fontsize=7,
                color="#333333" if n else "#999999")
    arcs = _arrows(ax, spec, step, width)
    ax.set_xlim(-step / 2 - 0.1, (len(boxes) - 0.5) * step + 0.1)
    ax.set_ylim(-2.0, 1.95 + (ARC_Y - 1.55 + 0.35 + 0.25 * arcs if arcs else 0))
    ax.axis("off")
    total = spec.num_params()
    ax.set_title(plain(f"{title or spec.name}: {len(spec.layers)} layers, {total:,} parameters "
                       f"({total * 4 / 1024:,.0f} KB as float32)"), fontsize=10)
    return fig
