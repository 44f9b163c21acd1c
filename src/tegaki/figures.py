"""Pictures of runs and networks, each a matplotlib `Figure`; `to_png` and `save` render them.

Every picture function takes arrays (or a spec, a history, probe results) and returns a
`matplotlib.figure.Figure` built without pyplot, so a notebook or a server that makes many of
them keeps no global state and leaks nothing. What happens to a figure is the caller's choice:

    fig = figures.confusion_matrix(ev.cm, classes)
    png = figures.to_png(fig)                   # PNG bytes (the report embeds these)
    figures.save(fig, "runs/x/confusion.png")   # an atomic write
    fig                                         # or show it in Jupyter

Every text drawn comes from `plain()`, so a class or layer name such as "$x^$" or "\\frac" is
shown as written, never read as mathtext.

Pictures: `learning_curves`, `confusion_matrix`, `gallery`, `misclassified`, `filters`,
`feature_maps`, `activations`, `attribution` (saliency and occlusion), `embedding`,
`probe_accuracy`, `reliability` (calibration); the network diagram is tegaki.diagram.draw. Small pixel pictures for HTML
galleries: `colourise`, `saliency_overlay` (uint8 RGB arrays; tegaki.png encodes them).
"""

from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tegaki import inspect as I
from tegaki.fileio import atomic_write_bytes

__all__ = ["plain", "new_figure", "to_png", "save", "has_validation", "learning_curves", "confusion_matrix",
           "gallery", "misclassified", "filters", "feature_maps", "activations", "attribution", "embedding",
           "probe_accuracy", "reliability", "colourise", "saliency_overlay", "FILTER_CMAP", "MAP_CMAP",
           "OCCLUSION_NOTE"]

FILTER_CMAP = "RdBu_r"  # blue negative, white zero, red positive
MAP_CMAP = "viridis"
OCCLUSION_NOTE = "6x6 patch set blank, stride 2;\nmargin: logit of the class minus the best other"


# rendering ---------------------------------------------------------------------------------------
def to_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure rendered by Agg as PNG bytes (cropped to what is drawn)."""
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    with warnings.catch_warnings():  # a file name in a script the font lacks (CJK ...) draws boxes, silently
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font", category=UserWarning)
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def save(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write the figure as a PNG at `path` atomically (a temporary name, then a rename) and close it.

    Figures made here belong to no pyplot figure manager; one made with pyplot is closed there too.
    Returns the path written."""
    png = to_png(fig, dpi)
    atomic_write_bytes(path, png)
    close(fig)
    return Path(path)


def close(fig: Figure) -> None:
    """Forget a figure: removes it from pyplot's registry if it is there (nothing to do otherwise)."""
    plt = sys.modules.get("matplotlib.pyplot")  # never import pyplot only to close
    if plt is not None and getattr(fig, "number", None) in plt.get_fignums():
        plt.close(fig)


def plain(text) -> str:
    """`text` as matplotlib shows it literally: every "$" escaped, so nothing is read as mathtext
    (a class named "$x^$" would otherwise fail to render)."""
    return str(text).replace("$", r"\$")


def new_figure(figsize: tuple[float, float], layout: str | None = None) -> Figure:
    """A Figure with its own Agg canvas, outside pyplot (nothing global holds on to it)."""
    _show_inline_in_ipython()
    fig = Figure(figsize=figsize, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _show_inline_in_ipython() -> None:
    """In Jupyter/IPython, a Figure that ends a cell is shown as a PNG (pyplot would register this; these
    figures bypass pyplot). Does nothing outside IPython, and never imports it."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None or getattr(shell, "_tegaki_figures", False):
        return
    shell.display_formatter.formatters["image/png"].for_type(Figure, lambda fig: to_png(fig, dpi=90))
    shell._tegaki_figures = True


def _cmap(name: str):
    return matplotlib.colormaps[name]


# training and evaluation -----------------------------------------------------------------------
def has_validation(history: Sequence[dict]) -> bool:
    """Whether every epoch of a history has validation figures (not so for --valid-size 0; runs of an older
    tegaki wrote the training figures there instead, which are no validation either)."""
    return bool(history) and all(r.get("valid_loss") is not None for r in history) and not all(
        r.get("valid_loss") == r.get("train_loss") and r.get("valid_acc") == r.get("train_acc") for r in history)


def learning_curves(history: Sequence[dict], title: str = "") -> Figure:
    """Loss and accuracy per epoch, training (and validation when the run kept a split).

    `history`: one dict per epoch with epoch, train_loss, train_acc (0..1) and optionally
    valid_loss, valid_acc. The x axes tick whole epochs only."""
    ep = [r["epoch"] for r in history]
    style = "o-" if len(ep) <= 30 else "-"  # markers hide a long run's curve
    fig = new_figure((10, 3.6), layout="constrained")
    a, b = fig.subplots(1, 2)
    kinds = {"train": "train", "valid": "validation"} if has_validation(history) else {"train": "train"}
    losses = [r[f"{k}_loss"] for r in history for k in kinds]
    for k, label in kinds.items():
        a.plot(ep, [r[f"{k}_loss"] for r in history], style, label=label)
    if losses and min(losses) > 0 and max(losses) / min(losses) > 20:
        a.set_yscale("log")  # a long run's loss spans decades; on a linear axis its end is a flat line
    a.set_ylabel("cross-entropy loss"), a.set_title("loss")
    for k, label in kinds.items():
        b.plot(ep, [100 * r[f"{k}_acc"] for r in history], style, label=label)
    if len(ep) >= 10:  # zoom past the first tenth of the run, where the interesting differences are
        late = [100 * r[f"{k}_acc"] for r in history[len(ep) // 10:] for k in kinds]
        lo, hi = min(late), max(late)
        b.set_ylim(lo - 0.15 * (hi - lo) - 0.05, min(100.0, hi + 0.15 * (hi - lo)) + 0.05)
    b.set_ylabel("accuracy (%)"), b.set_title("accuracy")
    for ax in (a, b):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # whole epochs, even for one
        ax.set_xlabel("epoch"), ax.legend(), ax.grid(alpha=0.3)
    if title:
        fig.suptitle(plain(title))
    return fig


def confusion_matrix(cm: np.ndarray, classes: Sequence[str], title: str = "confusion matrix") -> Figure:
    """Counts of (true row, predicted column), coloured on a log scale so few mistakes stay visible."""
    cm = np.asarray(cm)
    k = len(classes)
    names = [plain(c) for c in classes]
    fig = new_figure((0.55 * k + 2.5, 0.55 * k + 2))
    ax = fig.subplots()
    shade = np.log10(cm + 1)
    im = ax.imshow(shade, cmap="Blues")
    dark = 0.55 * float(shade.max())  # the text's colour follows the cell's, on the same log scale
    for i in range(k):
        for j in range(k):
            v = cm[i, j]
            ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                    color="white" if shade[i, j] > dark else ("black" if v else "#bbb"))
    ax.set_xticks(range(k), names, rotation=45 if max(map(len, classes), default=0) > 2 else 0)
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted"), ax.set_ylabel("true"), ax.set_title(plain(title))
    fig.colorbar(im, ax=ax, fraction=0.046, label="log10(count + 1)")
    return fig


def reliability(data: dict, scores: dict | None = None, title: str = "") -> Figure:
    """The reliability diagram: accuracy against mean confidence per confidence bin, with the
    diagonal a calibrated model follows, and below it how many examples fall in each bin.

    `data`: tegaki.evaluate.reliability's {"edges", "count", "confidence", "accuracy"}; `scores`:
    optional {"ece", "nll", "brier"} shown in the title."""
    edges, count = np.asarray(data["edges"]), np.asarray(data["count"])
    acc, conf = np.asarray(data["accuracy"], np.float64), np.asarray(data["confidence"], np.float64)
    mids, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    full = count > 0
    fig = new_figure((5.2, 6), layout="constrained")
    a, b = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    a.plot([0, 1], [0, 1], "--", color="#888", label="perfectly calibrated")
    a.bar(mids[full], acc[full], width[full], color="#4c72b0", edgecolor="white", label="accuracy in bin")
    a.bar(mids[full], np.abs(conf - acc)[full], width[full], bottom=np.minimum(acc, conf)[full], color="#dd8452",
          alpha=0.6, edgecolor="#dd8452", hatch="//", fill=False, label="gap to mean confidence")
    a.set_xlim(0, 1), a.set_ylim(0, 1), a.set_ylabel("accuracy"), a.legend(loc="best"), a.grid(alpha=0.3)
    b.bar(mids[full], count[full], width[full], color="#55a868", edgecolor="white")
    b.set_yscale("log"), b.set_ylabel("examples"), b.set_xlabel("confidence (top probability)")
    head = plain(title) if title else "reliability diagram"
    if scores:
        head += f"\nECE {scores['ece']:.2%}   NLL {scores['nll']:.4f}   Brier {scores['brier']:.4f}"
    a.set_title(head)
    return fig


def gallery(images: np.ndarray, captions: Sequence[str], cols: int = 10, title: str = "",
            cmap: str = "gray") -> Figure:
    """Small images in a grid of `cols` columns, each with its caption above it."""
    n = len(images)
    rows = max(1, (n + cols - 1) // cols)
    fig = new_figure((cols * 1.15, rows * 1.35 + 0.4))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, cap in zip(axes.flat, images, captions):
        ax.imshow(img, cmap=cmap)
        ax.set_title(plain(cap), fontsize=7)
    if title:
        fig.suptitle(plain(title))
    return fig


def misclassified(images: np.ndarray, labels: np.ndarray, preds: np.ndarray, probs: np.ndarray,
                  classes: Sequence[str], limit: int = 40) -> Figure:
    """The first `limit` mistakes (pass them most confident first), with true and predicted class."""
    caps = [f"true {_short(classes[t])}\npred {_short(classes[p])} {below_one(probs[i, p])}" for i, (t, p) in
            enumerate(zip(labels[:limit], preds[:limit]))]
    return gallery(images[:limit], caps, title=f"misclassified test {things(classes)} (most confident first)")


def below_one(p: float) -> str:
    """A probability as a percentage that never reads 100% unless it is 1: a wrong answer at 0.9985 shows
    99.8%, not a certainty (one decimal from 99%, none below)."""
    if p >= 1.0:
        return "100%"
    return f"{np.floor(p * 1000) / 10:.1f}%" if p >= 0.99 else f"{p:.0%}"


def _short(name, width: int = 10) -> str:
    """A class name short enough for a gallery caption (Fashion-MNIST's "T-shirt/top" -> "T-shirt/t…")."""
    name = str(name)
    return name if len(name) <= width else name[:width - 1] + "…"


def thing(classes: Sequence[str]) -> str:
    """"digit" for digit classes, "image" for any other."""
    return "digit" if all(str(c) in "0123456789" and len(str(c)) == 1 for c in classes) else "image"


def things(classes: Sequence[str]) -> str:
    return thing(classes) + "s"


# inside the network ----------------------------------------------------------------------------
def _imshow_mosaic(ax, m: np.ndarray, cmap: str, symmetric: bool = True):
    cm = _cmap(cmap).with_extremes(bad="#d9d9d9")  # gutters: grey, a colour no weight or map value has
    if symmetric:
        v = float(np.nanmax(np.abs(m))) or 1.0
        im = ax.imshow(np.ma.masked_invalid(m), cmap=cm, vmin=-v, vmax=v, interpolation="nearest")
    else:
        im = ax.imshow(np.ma.masked_invalid(m), cmap=cm, interpolation="nearest")
    ax.set_xticks([]), ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)
    return im


def _filter_panels(before: dict | None, after: dict, layer: str) -> list[tuple[str, np.ndarray]]:
    m_after = I.filter_mosaic(after, layer)[0]
    if before is None:
        return [("after training", m_after)]
    change = {f"{layer}.weight": after[f"{layer}.weight"] - before[f"{layer}.weight"]}
    return [("before training", I.filter_mosaic(before, layer)[0]), ("after training", m_after),
            ("change (after - before)", I.filter_mosaic(change, layer)[0])]


def filters(before: dict | None, after: dict, layer: str, title: str = "") -> Figure:
    """A conv layer's filters after training; with `before` (the initial weights) also before and the
    change training made. `before`/`after`: weight dicts holding "<layer>.weight" of shape
    (out, in, kh, kw). Each filter is scaled to its own largest weight."""
    panels = _filter_panels(before, after, layer)
    h, w = panels[-1][1].shape
    pw = min(12.0, max(2.6, 0.045 * w))  # inches per panel
    ph = pw * h / w + 0.35
    shape = after[f"{layer}.weight"].shape
    if w > 1.6 * h:  # wide mosaics: stack the panels
        fig = new_figure((pw, ph * len(panels) + 0.8), layout="constrained")
        axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    else:
        fig = new_figure((pw * len(panels) + 0.3, ph + 0.9), layout="constrained")
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
    fig.get_layout_engine().set(w_pad=0.12, wspace=0.06)
    for ax, (label, m) in zip(axes, panels):
        _imshow_mosaic(ax, m, FILTER_CMAP)
        ax.set_title(label, fontsize=10)
    what = (f"{shape[0]} filters of {shape[2]}x{shape[3]}" if shape[1] == 1 else
            f"{shape[0]} filters (columns) x {shape[1]} input channels (rows), {shape[2]}x{shape[3]} each")
    fig.suptitle(plain(title or f"{layer}: {what}"), fontsize=11)
    fig.supxlabel("red: positive weight, blue: negative; each filter scaled to its own largest weight",
                  fontsize=8, color="#555555")
    return fig


def feature_maps(image: np.ndarray, maps: dict[str, np.ndarray], shapes: dict[str, Sequence[int]],
                 title: str = "") -> Figure:
    """The input (H, W), then each layer's maps (C, H, W) as one mosaic panel per layer.

    `maps`: layer name -> its output for the image; `shapes`: layer name -> output shape (for titles)."""
    names = list(maps)
    fig = new_figure((2.2 + 3.3 * len(names), 3.9), layout="constrained")
    axes = fig.subplots(1, len(names) + 1, squeeze=False,
                        gridspec_kw={"width_ratios": [0.62] + [1.0] * len(names)})[0]
    axes[0].imshow(image, cmap="gray", interpolation="nearest")
    axes[0].set_title("input", fontsize=10), axes[0].axis("off")
    for ax, name in zip(axes[1:], names):
        a = maps[name]  # (C, H, W)
        cols = int(np.ceil(np.sqrt(a.shape[0] * 1.25)))
        signed = float(np.min(a)) < 0  # a conv's raw output: zero in the middle of a diverging map
        _imshow_mosaic(ax, I.mosaic(a, cols, normalise="none"), FILTER_CMAP if signed else MAP_CMAP, symmetric=signed)
        ax.set_title(plain(f"{name}: {'x'.join(map(str, shapes[name]))}"), fontsize=10)
    if title:
        fig.suptitle(plain(title), fontsize=11)
    fig.supxlabel("maps with negative values: red positive, blue negative, white zero; maps without (after a ReLU or "
                  "pooling of one): dark zero, yellow strongest; one scale per layer", fontsize=8, color="#555555")
    return fig


def _probability_bars(ax, v: np.ndarray, classes: Sequence[str]) -> None:
    top = int(v.argmax())
    ax.bar(range(len(v)), v, color=["#d62728" if i == top else "#1f77b4" for i in range(len(v))])
    ax.set_xticks(range(len(v)), [plain(c) for c in classes[:len(v)]], fontsize=8)
    ax.set_ylim(0, 1.15)  # room for the label of a bar at 100%
    ax.set_yticks([0, 0.5, 1.0])
    for i, p in enumerate(v):
        if p >= 0.01:
            ax.text(i, p + 0.02, below_one(p), ha="center", fontsize=7)
    ax.set_title(plain(f"output probabilities (predicted {classes[top] if top < len(classes) else top})"),
                 fontsize=9, loc="left")


def _unit_bars(ax, label: str, v: np.ndarray, classes: Sequence[str]) -> None:
    ax.bar(np.arange(len(v)), v, width=1.0 if len(v) > 60 else 0.8, color=np.where(v >= 0, "#1f77b4", "#ff7f0e"))
    ax.axhline(0, color="#333333", linewidth=0.5)
    ax.set_xlim(-1, len(v))
    if len(v) <= 20:
        names = [plain(c) for c in classes[:len(v)]] if len(v) == len(classes) else [str(i) for i in range(len(v))]
        ax.set_xticks(range(len(v)), names, fontsize=8)
    active = f", {np.mean(v > 0):.0%} active" if v.min() >= 0 else ""
    ax.set_title(plain(f"{label}: {len(v)} units, from {v.min():+.2f} to {v.max():+.2f}{active}"),
                 fontsize=9, loc="left")


def activations(items: Sequence[tuple[str, np.ndarray]], classes: Sequence[str], title: str = "") -> Figure:
    """One bar chart per (label, values) item: dense layers' units, and for the label "probabilities"
    the output distribution with the predicted class in red (as Inspector.dense_activations gives)."""
    fig = new_figure((9, 1.9 * len(items) + 0.4), layout="tight")
    axes = fig.subplots(len(items), 1, squeeze=False)[:, 0]
    for ax, (label, v) in zip(axes, items):
        v = np.asarray(v, np.float64)
        if label == "probabilities":
            _probability_bars(ax, v, classes)
        else:
            _unit_bars(ax, label, v, classes)
        ax.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(plain(title), fontsize=11)
    return fig


def attribution(image: np.ndarray, saliency: np.ndarray, occlusion: np.ndarray | None = None, title: str = "",
                occlusion_note: str = "") -> Figure:
    """Input | |saliency| | saliency over the digit | occlusion (when given): which pixels a class's
    score depends on. `saliency`: d score / d pixel (H, W); `occlusion`: the drop in margin per patch."""
    s = np.abs(saliency)
    n = 3 + (occlusion is not None)
    fig = new_figure((3.0 * n, 3.4), layout="constrained")
    axes = fig.subplots(1, n)
    axes[0].imshow(image, cmap="gray", interpolation="nearest"), axes[0].set_title("input", fontsize=10)
    im = axes[1].imshow(s, cmap="hot", interpolation="nearest")
    axes[1].set_title("saliency |d logit / d pixel|", fontsize=10)
    fig.colorbar(im, ax=axes[1], fraction=0.046)
    axes[2].imshow(image, cmap="gray", interpolation="nearest")
    axes[2].imshow(s, cmap="hot", alpha=0.6, interpolation="bilinear")
    axes[2].set_title("saliency over the digit", fontsize=10)
    if occlusion is not None:
        v = float(np.abs(occlusion).max()) or 1.0
        im = axes[3].imshow(occlusion, cmap="RdBu_r", vmin=-v, vmax=v, interpolation="nearest")
        axes[3].set_title("occlusion: drop in margin", fontsize=10)
        fig.colorbar(im, ax=axes[3], fraction=0.046)
        if occlusion_note:
            axes[3].set_xlabel(plain(occlusion_note), fontsize=8)
    for ax in axes:
        ax.set_xticks([]), ax.set_yticks([])
    if title:
        fig.suptitle(plain(title), fontsize=11)
    return fig


def embedding(z: np.ndarray, labels: np.ndarray, classes: Sequence[str], title: str = "") -> Figure:
    """2-D points (N, 2) coloured by class (`labels`: N class indices), each class's name at its median."""
    fig = new_figure((6.6, 5.8))
    ax = fig.subplots()
    cmap = _cmap("tab10" if len(classes) <= 10 else "tab20")
    labels = np.asarray(labels)
    present = [(k, plain(c)) for k, c in enumerate(classes) if (labels == k).any()]
    for k, c in present:
        sel = labels == k
        ax.scatter(z[sel, 0], z[sel, 1], s=3, color=cmap(k % cmap.N), alpha=0.6, label=c, rasterized=True)
    for k, c in present:
        mx, my = np.median(z[labels == k], axis=0)
        ax.text(mx, my, c, fontsize=13, fontweight="bold", ha="center", va="center",
                bbox=dict(boxstyle="round,pad=0.15", facecolor="white", alpha=0.75, edgecolor=cmap(k % cmap.N)))
    ax.set_title(plain(title), fontsize=10)
    ax.set_xticks([]), ax.set_yticks([])
    ax.legend(markerscale=4, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    return fig


def probe_accuracy(results: Sequence, network_accuracy: float, title: str = "") -> Figure:
    """Dots: test accuracy of each classifier on each layer (tegaki.probe results, with .classifier, .label,
    .accuracy, .train_size, .dims), one marker and colour per classifier, joined across the layers; the
    network's own accuracy as a dashed line. Dots, not bars: the axis is zoomed to the accuracies, and a bar's
    length from a cut-off axis would exaggerate the differences."""
    layers = list(dict.fromkeys(r.label for r in results))
    clfs = list(dict.fromkeys(r.classifier for r in results))
    by = {(r.classifier, r.label): r for r in results}
    first = {c: next(r for r in results if r.classifier == c) for c in clfs}
    fig = new_figure((1.9 * len(layers) + 1.5, 3.8), layout="constrained")
    ax = fig.subplots()
    step = 0.6 / max(1, len(clfs))  # each classifier a little to the side, so labels do not collide
    for j, (c, marker) in enumerate(zip(clfs, "osD^vP*X" * len(clfs))):
        xs = [i + (j - (len(clfs) - 1) / 2) * step for i in range(len(layers))]
        ys = [100 * by[(c, l)].accuracy if (c, l) in by else np.nan for l in layers]
        ax.plot(xs, ys, marker=marker, markersize=6, linewidth=0.8,
                label=plain(f"{c} ({first[c].train_size:,} training examples)"))
        for x, y in zip(xs, ys):
            if np.isfinite(y):
                ax.annotate(f"{y:.1f}", (x, y), xytext=(0, 5), textcoords="offset points", ha="center",
                            va="bottom", fontsize=7)
    ax.axhline(100 * network_accuracy, color="#d62728", linestyle="--", linewidth=1,
               label=f"the network's softmax ({network_accuracy:.2%})")
    accs = [100 * r.accuracy for r in results] + [100 * network_accuracy]
    ax.set_ylim(max(0.0, min(accs) - 1.5), min(100.4, max(accs) + 1.2))
    ax.set_xlim(-0.5, len(layers) - 0.5)
    dims = {r.label: r.dims for r in results}
    ax.set_xticks(range(len(layers)), [plain(f"{l}\n({dims[l]:,} features)") for l in layers], fontsize=8)
    ax.set_ylabel("test accuracy (%), axis cut")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(plain(title or "hidden layers as features for scikit-learn classifiers"), fontsize=10)
    return fig


# pixel pictures for HTML galleries -------------------------------------------------------------
def colourise(a: np.ndarray, cmap: str = "gray", vmin: float | None = None, vmax: float | None = None,
              scale: int = 2) -> np.ndarray:
    """A 2-D array through a colour map as uint8 RGB (H*scale, W*scale, 3), nearest-neighbour enlarged."""
    a = np.asarray(a, np.float64)
    lo = float(np.nanmin(a)) if vmin is None else vmin
    hi = float(np.nanmax(a)) if vmax is None else vmax
    t = np.clip((a - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    rgb = (_cmap(cmap)(t)[..., :3] * 255).round().astype(np.uint8)  # (H, W, 3)
    return rgb.repeat(scale, axis=0).repeat(scale, axis=1)


def saliency_overlay(image: np.ndarray, grad: np.ndarray, vmax: float, scale: int = 2) -> np.ndarray:
    """|gradient| / vmax in the 'hot' colours with the digit faintly underneath, as uint8 RGB
    (H*scale, W*scale, 3)."""
    s = np.clip(np.abs(np.asarray(grad, np.float64)) / (vmax or 1.0), 0, 1)
    rgb = _cmap("hot")(s)[..., :3] * 0.75 + (np.asarray(image, np.float64) / 255.0)[..., None] * 0.35
    rgb = (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)  # (H, W, 3)
    return rgb.repeat(scale, axis=0).repeat(scale, axis=1)
