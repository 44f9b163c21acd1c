"""Pictures of what a network learned, and the self-contained HTML report of a run.

The pictures (matplotlib figures) draw the arrays of tegaki.inspect: filters before and after
training, feature maps, dense activations, saliency and occlusion, 2-D embeddings. `figure_png`
turns any of them into PNG bytes, `save_figure` into a file.

`build_report(run_path)` writes one HTML file holding everything (images as data: URIs, styles
inline, no script, no external resource), so it opens offline in any browser:
summary and provenance, network diagram, learning curves, accuracy, per-class table, confusion
matrix, misclassified gallery linked to saliency maps, filters, one digit's feature maps and
activations, PCA and t-SNE embeddings of the penultimate layer.
"""

from __future__ import annotations

import base64
import html
import io
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from tegaki import inspect as I  # noqa: E402
from tegaki.fileio import atomic_write_bytes, atomic_write_text  # noqa: E402

FILTER_CMAP = "RdBu_r"  # blue negative, white zero, red positive
MAP_CMAP = "viridis"
OCCLUSION_NOTE = "6x6 patch set blank, stride 2;\nmargin: logit of the class minus the best other"


# figures -> bytes / files ------------------------------------------------------------------------
def figure_png(fig, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def save_figure(fig, path: Path, dpi: int = 100) -> Path:
    atomic_write_bytes(path, figure_png(fig, dpi))
    return Path(path)


def array_png(a: np.ndarray, cmap: str = "gray", vmin: float | None = None, vmax: float | None = None,
              scale: int = 2) -> bytes:
    """A 2-D array as a small PNG (PIL, nearest-neighbour upscaled): cheap, for galleries."""
    a = np.asarray(a, np.float64)
    lo = float(np.nanmin(a)) if vmin is None else vmin
    hi = float(np.nanmax(a)) if vmax is None else vmax
    t = np.clip((a - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    rgb = (plt.get_cmap(cmap)(t)[..., :3] * 255).round().astype(np.uint8)  # (H, W, 3)
    im = Image.fromarray(rgb).resize((a.shape[1] * scale, a.shape[0] * scale), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def saliency_png(image: np.ndarray, grad: np.ndarray, vmax: float, scale: int = 2) -> bytes:
    """|gradient| in the 'hot' colours with the digit faintly underneath, as a small PNG."""
    s = np.clip(np.abs(np.asarray(grad, np.float64)) / (vmax or 1.0), 0, 1)
    rgb = plt.get_cmap("hot")(s)[..., :3] * 0.75 + (np.asarray(image, np.float64) / 255.0)[..., None] * 0.35
    rgb = (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)  # (H, W, 3)
    im = Image.fromarray(rgb).resize((rgb.shape[1] * scale, rgb.shape[0] * scale), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _pct(p: float) -> str:
    return f"{p:.0%}" if p >= 0.095 else f"{p:.1%}"


def _imshow_mosaic(ax, m: np.ndarray, cmap: str, symmetric: bool = True):
    cm = plt.get_cmap(cmap).with_extremes(bad="white")
    if symmetric:
        v = float(np.nanmax(np.abs(m))) or 1.0
        im = ax.imshow(np.ma.masked_invalid(m), cmap=cm, vmin=-v, vmax=v, interpolation="nearest")
    else:
        im = ax.imshow(np.ma.masked_invalid(m), cmap=cm, interpolation="nearest")
    ax.set_xticks([]), ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)
    return im


# pictures ----------------------------------------------------------------------------------------
def filters_figure(before: dict | None, after: dict, layer: str, title: str = ""):
    """A conv layer's filters before training, after, and the change training made (when the run
    kept its initial weights), each filter scaled to its own largest weight."""
    m_after, n, cols = I.filter_mosaic(after, layer)
    panels = [("after training", m_after)]
    if before is not None:
        change = {f"{layer}.weight": after[f"{layer}.weight"] - before[f"{layer}.weight"]}
        panels = [("before training", I.filter_mosaic(before, layer)[0]), ("after training", m_after),
                  ("change (after - before)", I.filter_mosaic(change, layer)[0])]
    h, w = m_after.shape
    wide = w > 1.6 * h
    pw = min(12.0, max(2.6, 0.045 * w))  # inches per panel
    ph = pw * h / w + 0.35
    shape = after[f"{layer}.weight"].shape
    if wide:  # stack the panels
        fig, axes = plt.subplots(len(panels), 1, figsize=(pw, ph * len(panels) + 0.8), squeeze=False,
                                 layout="constrained")
        axes = axes[:, 0]
    else:
        fig, axes = plt.subplots(1, len(panels), figsize=(pw * len(panels) + 0.3, ph + 0.9), squeeze=False,
                                 layout="constrained")
        axes = axes[0]
    fig.get_layout_engine().set(w_pad=0.12, wspace=0.06)
    for ax, (label, m) in zip(axes, panels):
        _imshow_mosaic(ax, m, FILTER_CMAP)
        ax.set_title(label, fontsize=10)
    what = (f"{shape[0]} filters of {shape[2]}x{shape[3]}" if shape[1] == 1 else
            f"{shape[0]} filters (columns) x {shape[1]} input channels (rows), {shape[2]}x{shape[3]} each")
    fig.suptitle(title or f"{layer}: {what}", fontsize=11)
    fig.supxlabel("red: positive weight, blue: negative; each filter scaled to its own largest weight",
                  fontsize=8, color="#555555")
    return fig


def feature_maps_figure(image: np.ndarray, maps: dict[str, np.ndarray], shapes: dict, title: str = ""):
    """The input, then every conv and pool layer's maps for it, one panel per layer."""
    names = list(maps)
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(2.2 + 3.3 * len(names), 3.9),
                             gridspec_kw={"width_ratios": [0.62] + [1.0] * len(names)}, squeeze=False,
                             layout="constrained")
    axes = axes[0]
    axes[0].imshow(image, cmap="gray", interpolation="nearest")
    axes[0].set_title("input", fontsize=10), axes[0].axis("off")
    for ax, name in zip(axes[1:], names):
        a = maps[name]  # (C, H, W)
        cols = int(np.ceil(np.sqrt(a.shape[0] * 1.25)))
        m = I.mosaic(a, cols, normalise="none")
        _imshow_mosaic(ax, m, MAP_CMAP, symmetric=False)
        ax.set_title(f"{name}: {'x'.join(map(str, shapes[name]))}", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def activations_figure(items: list[tuple[str, np.ndarray]], classes: list[str], title: str = ""):
    """One bar chart per dense layer (after its activation), then the output probabilities."""
    fig, axes = plt.subplots(len(items), 1, figsize=(9, 1.9 * len(items) + 0.4), squeeze=False)
    for ax, (label, v) in zip(axes[:, 0], items):
        v = np.asarray(v, np.float64)
        if label == "probabilities":
            top = int(v.argmax())
            colours = ["#d62728" if i == top else "#1f77b4" for i in range(len(v))]
            ax.bar(range(len(v)), v, color=colours)
            ax.set_xticks(range(len(v)), classes[:len(v)], fontsize=8)
            ax.set_ylim(0, 1.05)
            for i, p in enumerate(v):
                if p >= 0.01:
                    ax.text(i, p + 0.02, f"{p:.0%}", ha="center", fontsize=7)
            ax.set_title(f"output probabilities (predicted {classes[top] if top < len(classes) else top})",
                         fontsize=9, loc="left")
        else:
            colours = np.where(v >= 0, "#1f77b4", "#ff7f0e")
            ax.bar(np.arange(len(v)), v, width=1.0 if len(v) > 60 else 0.8, color=colours)
            ax.axhline(0, color="#333333", linewidth=0.5)
            ax.set_xlim(-1, len(v))
            if len(v) <= 20:
                ax.set_xticks(range(len(v)), classes[:len(v)] if len(v) == len(classes) else range(len(v)),
                              fontsize=8)
            active = f", {np.mean(v > 0):.0%} active" if v.min() >= 0 else ""
            ax.set_title(f"{label}: {len(v)} units, from {v.min():+.2f} to {v.max():+.2f}{active}",
                         fontsize=9, loc="left")
        ax.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def attribution_figure(image: np.ndarray, saliency: np.ndarray, occlusion: np.ndarray | None, title: str = "",
                       occlusion_note: str = ""):
    """Input | |saliency| | saliency over the digit | occlusion."""
    s = np.abs(saliency)
    n = 3 + (occlusion is not None)
    fig, axes = plt.subplots(1, n, figsize=(3.0 * n, 3.4), layout="constrained")
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
            axes[3].set_xlabel(occlusion_note, fontsize=8)
    for ax in axes:
        ax.set_xticks([]), ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def embedding_figure(z: np.ndarray, labels: np.ndarray, classes: list[str], title: str):
    """2-D points coloured by class, each class's name written at its median."""
    fig, ax = plt.subplots(figsize=(6.6, 5.8))
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for k, c in enumerate(classes):
        sel = labels == k
        if sel.any():
            ax.scatter(z[sel, 0], z[sel, 1], s=3, color=cmap(k % cmap.N), alpha=0.6, label=c, rasterized=True)
    for k, c in enumerate(classes):
        sel = labels == k
        if sel.any():
            mx, my = np.median(z[sel], axis=0)
            ax.text(mx, my, c, fontsize=13, fontweight="bold", ha="center", va="center",
                    bbox=dict(boxstyle="round,pad=0.15", facecolor="white", alpha=0.75, edgecolor=cmap(k % cmap.N)))
    ax.set_title(title, fontsize=10)
    ax.set_xticks([]), ax.set_yticks([])
    ax.legend(markerscale=4, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    return fig


# the HTML report ----------------------------------------------------------------------------------
@dataclass
class Page:
    """The report's HTML, built section by section."""

    title: str
    parts: list[str] = field(default_factory=list)
    toc: list[tuple[str, str]] = field(default_factory=list)
    images: int = 0
    image_bytes: int = 0

    def section(self, anchor: str, heading: str) -> None:
        self.toc.append((anchor, heading))
        self.parts.append(f'<h2 id="{anchor}">{html.escape(heading)}</h2>')

    def add(self, fragment: str) -> None:
        self.parts.append(fragment)

    def p(self, text: str, cls: str = "") -> None:
        self.parts.append(f"<p{f' class={chr(34)}{cls}{chr(34)}' if cls else ''}>{html.escape(text)}</p>")

    def img(self, png: bytes, alt: str, cls: str = "fig", width: int | None = None) -> str:
        self.images += 1
        self.image_bytes += len(png)
        w = f' width="{width}"' if width else ""
        return (f'<img class="{cls}" alt="{html.escape(alt)}"{w} '
                f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">')

    def figure(self, png: bytes, alt: str, caption: str = "") -> None:
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self.parts.append(f"<figure>{self.img(png, alt)}{cap}</figure>")

    def render(self, footer: str) -> str:
        toc = " · ".join(f'<a href="#{a}">{html.escape(h)}</a>' for a, h in self.toc)
        return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                f"<title>{html.escape(self.title)}</title><style>{CSS}</style></head><body>"
                f"<h1>{html.escape(self.title)}</h1><nav>{toc}</nav>" + "\n".join(self.parts)
                + f"<footer>{html.escape(footer)}</footer></body></html>\n")


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1180px;margin:1.5em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
nav{font-size:.9em;color:#555}nav a{color:#1f5fa8;text-decoration:none}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}td,th{padding:.25em .7em;border-bottom:1px solid #eee;
text-align:right}th{background:#f5f5f5}td.l,th.l{text-align:left}
table.kv td:first-child{text-align:left;color:#555;white-space:nowrap}table.kv td{text-align:left}
pre{background:#f7f7f7;padding:.7em;overflow-x:auto;font-size:.82em}
img.fig{max-width:100%;height:auto}figure{margin:1em 0}figcaption{font-size:.85em;color:#555}
.big{font-size:1.3em}.note{color:#666;font-size:.88em}
.gallery{display:flex;flex-wrap:wrap;gap:8px}
.nw{white-space:nowrap}
.card{border:1px solid #ddd;border-radius:6px;padding:4px;width:140px;text-align:center;font-size:.78em;
background:#fff}.card img{image-rendering:pixelated;width:84px;height:84px}
.card a{color:#1f5fa8}.card:target{outline:3px solid #e8a33d}
.sal{width:290px}.sal img{width:84px;height:84px;image-rendering:pixelated}
footer{margin:3em 0 1em;color:#888;font-size:.8em}
"""


def _kv_table(rows: list[tuple[str, str]]) -> str:
    return ('<table class="kv">' + "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
                                           for k, v in rows) + "</table>")


def _class_table(ev, classes: list[str]) -> str:
    from tegaki.evaluate import per_class

    m = per_class(ev.cm)
    head = "<tr><th class=l>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>"
    rows = [f"<tr><td class=l>{html.escape(c)}</td><td>{m['precision'][i]:.4f}</td><td>{m['recall'][i]:.4f}</td>"
            f"<td>{m['f1'][i]:.4f}</td><td>{int(m['support'][i])}</td></tr>" for i, c in enumerate(classes)]
    sup = m["support"]
    for name, w in (("macro avg", np.ones_like(sup)), ("weighted avg", sup)):
        avg = [np.average(m[k], weights=w) if w.sum() else 0.0 for k in ("precision", "recall", "f1")]
        rows.append(f"<tr><th class=l>{name}</th><th>{avg[0]:.4f}</th><th>{avg[1]:.4f}</th><th>{avg[2]:.4f}</th>"
                    f"<th>{int(sup.sum())}</th></tr>")
    return "<table>" + head + "".join(rows) + "</table>"


def _plot_png(fn, *args, **kw) -> bytes:
    """Run a tegaki.plots function (which writes a file) and return the PNG's bytes."""
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "plot.png"
        fn(*args, path=p, **kw)
        return p.read_bytes()


@dataclass
class ReportResult:
    path: Path
    seconds: float
    images: int
    size: int
    accuracy: float
    timings: dict[str, float]


def build_report(predictor, dataset, out: Path, index: int = 0, gallery_limit: int = 60,
                 tsne_sample: int = 2000, log=lambda m: None) -> ReportResult:
    """Write the HTML report of the predictor's run on `dataset`'s test set to `out`."""
    from tegaki import diagram, plots
    from tegaki.evaluate import Evaluation, confusion_matrix

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    tick = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        timings[name] = now - tick[0]
        tick[0] = now
        log(f"  {name}: {timings[name]:.1f} s")

    run, spec, classes = predictor.run, predictor.spec, predictor.classes
    look = I.Inspector(predictor)
    images, labels = dataset.test_images, np.asarray(dataset.test_labels)
    pen = I.penultimate(spec)
    layers = [pen] if pen else ["pixels"]
    feats = look.features(images, layers, with_logits=True)
    probs = I.softmax(feats["logits"].astype(np.float64))  # (N, K)
    pred = probs.argmax(axis=1)
    k = max(len(classes), probs.shape[1])
    ev = Evaluation(probs, labels, pred, confusion_matrix(labels, pred, k), list(classes))
    lap("forward pass over the test set")

    name = spec.name
    page = Page(f"tegaki report: {name}" + (f" ({run.path.name})" if run.path else ""))
    m, meta = run.metrics, run.meta
    cfg = meta.get("config", {})
    data = meta.get("data", {})

    # summary and provenance
    page.section("summary", "Summary")
    page.add(f'<p class="big">Test accuracy <b>{ev.accuracy:.2%}</b> (error {1 - ev.accuracy:.2%}) on '
             f"{len(labels):,} {html.escape(dataset.name)} test images.</p>")
    rows = [("run folder", str(run.path) if run.path else "-"), ("network", f"{name}: {spec.description}"),
            ("parameters", f"{spec.num_params():,}"), ("dataset", f"{dataset.name} (trained on {cfg.get('dataset', '?')})"),
            ("engine used here", predictor.engine_name)]
    trained = []
    if "test_accuracy" in m:
        trained.append(f"test accuracy {m['test_accuracy']:.2%} when trained")
    if "epochs" in m:
        trained.append(f"{m['epochs']} epochs" + (f" (best {m['best_epoch']})" if m.get("best_epoch") not in
                                                   (None, m["epochs"]) else "")
                       + (", stopped early" if m.get("stopped_early") else ""))
    if "train_seconds" in m:
        trained.append(f"{m['train_seconds']:.0f} s of training")
    if trained:
        rows.append(("training result", ", ".join(trained)))
    recipe = [f"{k.replace('_', ' ')} {cfg[k]}" for k in ("optimizer", "lr", "batch_size", "schedule", "epochs",
                                                          "patience", "weight_decay", "label_smoothing", "seed",
                                                          "valid_size", "engine", "device")
              if cfg.get(k) not in (None, "")]
    if recipe:
        rows.append(("training recipe", ", ".join(recipe)))
    rows.append(("normalisation", f"mean {run.norm['mean']}, std {run.norm['std']}"))
    rows.append(("command", " ".join(map(str, meta.get("command", []))) or "-"))
    rows.append(("versions", ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())))
    page.add(_kv_table(rows))
    prov = [("source", str(data.get("source", "?")))]
    for f, sums in (data.get("files") or {}).items():
        prov.append((f, ", ".join(f"{a} {b}" for a, b in sums.items()) if isinstance(sums, dict) else str(sums)))
    for key, v in data.items():
        if key not in ("source", "files"):
            prov.append((key, v if isinstance(v, (str, int, float)) else str(v)))
    page.add("<h3>Data provenance</h3>" + _kv_table(prov))

    # the network
    page.section("network", "Network")
    page.figure(_plot_png(diagram.draw, spec, title=name), "network diagram")
    page.add(f"<pre>{html.escape(spec.summary())}</pre>")
    lap("summary and diagram")

    # learning curves
    hist = run.history()
    page.section("curves", "Learning curves")
    if hist and all(k in hist[0] for k in ("train_loss", "valid_loss", "train_acc", "valid_acc")):
        splits = "training and validation splits" if plots.has_validation(hist) else "training set"
        page.figure(_plot_png(plots.learning_curves, hist, title=name), "learning curves",
                    f"loss and accuracy per epoch on the {splits}")
    else:
        page.p("This run has no per-epoch history (history.csv).", "note")

    # accuracy, per class, confusion
    page.section("accuracy", "Accuracy per class")
    page.add(_class_table(ev, classes))
    page.section("confusion", "Confusion matrix")
    page.figure(_plot_png(plots.confusion, ev.cm, classes, title=f"{name} on {dataset.name}: {ev.accuracy:.2%}"),
                "confusion matrix", "rows: true class, columns: predicted class (colour on a log scale)")
    lap("curves, table, confusion")

    # misclassified gallery, each linked to its saliency maps
    wrong = ev.misclassified()[:gallery_limit]
    page.section("mistakes", "Misclassified test digits")
    n_wrong = int((pred != labels).sum())
    if len(wrong):
        page.p(f"{n_wrong} of {len(labels):,} test digits are misclassified; the {len(wrong)} most confident "
               "mistakes are shown. Each shows its true label and the two most probable classes; click one "
               "for its saliency maps.", "note")
        g_pred = look.saliency(images[wrong], pred[wrong])[:, 0]  # (W, H, W)
        g_true = look.saliency(images[wrong], labels[wrong])[:, 0]
        cards, sal_cards = [], []
        for j, i in enumerate(wrong):
            top2 = np.argsort(-probs[i])[:2]
            t2 = " · ".join(f"{html.escape(classes[c])}&nbsp;{_pct(probs[i, c])}" for c in top2)
            cards.append(f'<div class="card" id="m{i}"><a href="#s{i}">{page.img(array_png(images[i]), f"test digit {i}")}'
                         f'</a><br>true <b>{html.escape(classes[labels[i]])}</b><br><span class="nw">top-2: {t2}</span><br>'
                         f'<a href="#s{i}">saliency</a> · #{i}</div>')
            v = max(float(np.abs(g_pred[j]).max()), float(np.abs(g_true[j]).max())) or 1.0
            sal_cards.append(
                f'<div class="card sal" id="s{i}">{page.img(array_png(images[i]), f"digit {i}")} '
                f'{page.img(saliency_png(images[i], g_pred[j], v), f"saliency for {classes[pred[i]]}")} '
                f'{page.img(saliency_png(images[i], g_true[j], v), f"saliency for {classes[labels[i]]}")}<br>'
                f'#{i}: input · for predicted {html.escape(classes[pred[i]])} · for true '
                f'{html.escape(classes[labels[i]])} <a href="#m{i}">back</a></div>')
        page.add('<div class="gallery">' + "".join(cards) + "</div>")
        page.section("saliency", "Saliency of the mistakes")
        page.p("|d logit / d pixel| for the predicted class and for the true class (same colour scale "
               "per digit, the digit faintly underneath): bright pixels are those whose change would move "
               "that class's score most.", "note")
        page.add('<div class="gallery">' + "".join(sal_cards) + "</div>")
    else:
        page.p("No test digit is misclassified.", "note")
    lap("mistakes and saliency")

    # filters
    convs = I.conv_layers(spec)
    page.section("filters", "Filters")
    if convs:
        before = run.initial_weights()
        if before is None:
            page.p("This run did not keep its initial weights (initial.safetensors): filters after training only.",
                   "note")
        for c in convs:
            page.figure(figure_png(filters_figure(before, run.weights, c)), f"filters of {c}")
    else:
        page.p(f"{name} has no conv layers, so there are no filters to show.", "note")
    lap("filters")

    # one digit's feature maps and activations
    if not 0 <= index < len(images):
        index = 0
    x = images[index]
    p_one = probs[index]
    page.section("digit", f"Inside the network: test digit #{index}")
    page.p(f"true {classes[labels[index]]}, predicted {classes[int(p_one.argmax())]} ({p_one.max():.1%}).", "note")
    maps = look.feature_maps(x)
    if maps:
        page.figure(figure_png(feature_maps_figure(x, maps, I.layer_shapes(spec), "feature maps of every conv and pool layer")),
                    "feature maps")
    page.figure(figure_png(activations_figure(look.dense_activations(x), classes)), "dense activations",
                "every dense layer's units (after its activation function) and the output probabilities")
    target = int(p_one.argmax())
    page.figure(figure_png(attribution_figure(x, look.saliency(x, target)[0, 0], look.occlusion(x, target),
                                              f"why {classes[target]}?", OCCLUSION_NOTE)),
                "saliency and occlusion")
    lap("one digit")

    # embeddings of the penultimate layer
    page.section("embedding", "Embedding of the penultimate layer")
    f = feats[layers[0]]
    z, ratio = I.pca_2d(f)
    title = (f"PCA of {layers[0]} ({f.shape[1]} features), {len(f):,} test digits; "
             f"axes explain {ratio[0]:.0%} + {ratio[1]:.0%}")
    page.figure(figure_png(embedding_figure(z, labels, classes, title)), "PCA embedding",
                title + " of the variance; colour: true class")
    lap("PCA")
    sample = I.sample_indices(len(f), tsne_sample)
    zt = I.tsne_2d(f[sample])
    title = f"t-SNE of {layers[0]}, a random sample of {len(sample):,} test digits"
    page.figure(figure_png(embedding_figure(zt, labels[sample], classes, title)), "t-SNE embedding",
                title + " (perplexity 30, 500 iterations); colour: true class")
    lap("t-SNE")

    seconds = time.perf_counter() - t_start
    text = page.render(f"made by tegaki report in {seconds:.1f} s on {time.strftime('%Y-%m-%d %H:%M:%S')}; "
                       f"{page.images} images embedded; no external resources.")
    atomic_write_text(out, text)
    return ReportResult(Path(out), seconds, page.images, len(text.encode()), ev.accuracy, timings)
