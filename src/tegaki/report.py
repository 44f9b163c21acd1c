"""The self-contained HTML report of a run: one file, opens offline in any browser.

`build_report(predictor, dataset, out)` writes one HTML file holding everything (images as data:
URLs, styles inline, no script, no external resource): summary and provenance, network diagram,
learning curves, accuracy, per-class table, confusion matrix, misclassified gallery linked to
saliency maps, filters, one digit's feature maps and activations, PCA and t-SNE embeddings of
the penultimate layer.

Each page section is one function that returns its HTML; `build_report` only puts them in order.
The pictures come from tegaki.figures (matplotlib Figures, rendered by figures.to_png) and the
small gallery images from tegaki.png; all HTML is written here.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tegaki import figures
from tegaki import inspect as I
from tegaki.calibration import fitted_on
from tegaki.fileio import atomic_write_text
from tegaki.numerics import softmax
from tegaki.png import data_url, encode


# small pictures for the galleries ---------------------------------------------------------------
def array_png(a: np.ndarray, cmap: str = "gray", vmin: float | None = None, vmax: float | None = None,
              scale: int = 2) -> bytes:
    """A 2-D array as a small PNG (nearest-neighbour enlarged): cheap, for galleries."""
    return encode(figures.colourise(a, cmap, vmin, vmax, scale))


def saliency_png(image: np.ndarray, grad: np.ndarray, vmax: float, scale: int = 2) -> bytes:
    """|gradient| in the 'hot' colours with the digit faintly underneath, as a small PNG."""
    return encode(figures.saliency_overlay(image, grad, vmax, scale))


def _sure(p: float) -> str:
    """A probability for a mistake's card: a wrong answer at 0.9985 reads 99.8%, never 100%."""
    return figures.below_one(p) if p >= 0.99 else _pct(p)


def _pct(p: float) -> str:
    return f"{p:.0%}" if p >= 0.095 else f"{p:.1%}"


# the page ---------------------------------------------------------------------------------------
@dataclass
class Page:
    """The report's HTML pieces: headings (with the table of contents) and embedded images."""

    title: str
    toc: list[tuple[str, str]] = field(default_factory=list)
    images: int = 0
    image_bytes: int = 0

    def section(self, anchor: str, heading: str) -> str:
        self.toc.append((anchor, heading))
        return f'<h2 id="{anchor}">{html.escape(heading)}</h2>'

    @staticmethod
    def p(text: str, cls: str = "") -> str:
        return f"<p{f' class={chr(34)}{cls}{chr(34)}' if cls else ''}>{html.escape(text)}</p>"

    def img(self, png: bytes, alt: str, cls: str = "fig", width: int | None = None) -> str:
        self.images += 1
        self.image_bytes += len(png)
        w = f' width="{width}"' if width else ""
        return f'<img class="{cls}" alt="{html.escape(alt)}"{w} src="{data_url(png)}">'

    def figure(self, fig, alt: str, caption: str = "", dpi: int = 100) -> str:
        """A matplotlib Figure as an embedded PNG, with its caption. A figure much wider than the page (a
        deep network's diagram, many feature maps) keeps 80% of its size in a box that scrolls sideways,
        instead of shrinking until its text cannot be read."""
        png = figures.to_png(fig, dpi)
        width = int.from_bytes(png[16:20], "big")  # the PNG header's width
        if width <= WIDE_FIGURE:
            cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
            return f"<figure>{self.img(png, alt)}{cap}</figure>"
        cap = f"<figcaption>{html.escape(caption + (' ' if caption else ''))}(wide: scroll sideways)</figcaption>"
        return f'<figure><div class="scroll">{self.img(png, alt, "fig wide", int(0.8 * width))}</div>{cap}</figure>'

    def render(self, parts: list[str], footer: str) -> str:
        toc = " · ".join(f'<a href="#{a}">{html.escape(h)}</a>' for a, h in self.toc)
        return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">{GENERATOR}"
                f"<title>{html.escape(self.title)}</title><style>{CSS}</style></head><body>"
                f"<h1>{html.escape(self.title)}</h1><nav>{toc}</nav>" + "\n".join(parts)
                + f"<footer>{html.escape(footer)}</footer></body></html>\n")


WIDE_FIGURE = 1800  # pixels: a figure wider than this scrolls in the report rather than shrinking
GENERATOR = '<meta name="generator" content="tegaki report">'  # how `report --out` knows a file it may replace

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1180px;margin:1.5em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
nav{font-size:.9em;color:#555}nav a{color:#1f5fa8;text-decoration:none}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}td,th{padding:.25em .7em;border-bottom:1px solid #eee;
text-align:right}th{background:#f5f5f5}td.l,th.l{text-align:left}
table.kv td:first-child{text-align:left;color:#555;white-space:nowrap}table.kv td{text-align:left;overflow-wrap:anywhere}
pre{background:#f7f7f7;padding:.7em;overflow-x:auto;font-size:.82em}
img.fig{max-width:100%;height:auto}.scroll{overflow-x:auto}img.fig.wide{max-width:none}figure{margin:1em 0}figcaption{font-size:.85em;color:#555}
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
    return '<div class="scroll"><table>' + head + "".join(rows) + "</table></div>"  # wide on a phone: scrolls


# what every section reads -------------------------------------------------------------------------
@dataclass
class Context:
    """The run, the test set and what one forward pass over it gave, shared by the sections."""

    predictor: Any
    dataset: Any
    page: Page
    look: Any  # tegaki.inspect.Inspector
    images: np.ndarray  # (N, 28, 28) uint8
    labels: np.ndarray  # (N,)
    probs: np.ndarray  # (N, K)
    pred: np.ndarray  # (N,)
    ev: Any  # tegaki.evaluate.Evaluation
    feats: dict[str, np.ndarray]
    layer: str  # the penultimate layer (or "pixels")
    index: int = 0
    gallery_limit: int = 60
    tsne_sample: int = 2000

    @property
    def name(self) -> str:
        return self.predictor.spec.name

    @property
    def classes(self) -> list[str]:
        return list(self.predictor.classes)


def forward(predictor, dataset, page: Page, **options) -> Context:
    """One pass over the test set: the penultimate features, the logits and the evaluation."""
    from tegaki.evaluate import Evaluation, confusion_matrix

    look = I.Inspector(predictor)
    images, labels = dataset.test_images, np.asarray(dataset.test_labels)
    layer = I.penultimate(predictor.spec) or "pixels"
    feats = look.features(images, [layer], with_logits=True)
    probs = predictor.calibrated(feats["logits"])[0]  # (N, K): softmax(logits / T), as every answer shows
    pred = probs.argmax(axis=1)
    k = max(len(predictor.classes), probs.shape[1])
    ev = Evaluation(probs, labels, pred, confusion_matrix(labels, pred, k), list(predictor.classes))
    return Context(predictor, dataset, page, look, images, labels, probs, pred, ev, feats, layer, **options)


# the sections, in page order ---------------------------------------------------------------------
def summary_section(c: Context) -> str:
    run, spec, m, cfg = c.predictor.run, c.predictor.spec, c.predictor.run.metrics, c.predictor.run.meta.get("config", {})
    head = (f'<p class="big">Test accuracy <b>{c.ev.accuracy:.2%}</b> (error {1 - c.ev.accuracy:.2%}) on '
            f"{len(c.labels):,} {html.escape(c.dataset.name)} test images.</p>")
    rows = [("run folder", str(run.path) if run.path else "-"), ("network", f"{c.name}: {spec.description}"),
            ("parameters", f"{spec.num_params():,}"),
            ("dataset", f"{c.dataset.name} (trained on {cfg.get('dataset', '?')})"),
            ("engine used here", c.predictor.engine_name)]
    trained = []
    if isinstance(m.get("test_accuracy"), (int, float)):  # a model saved from Python has none (null)
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
    recipe += [f"augment {cfg['augment']}"] if cfg.get("augment") else []
    recipe += [f"ema {cfg['ema']}"] if cfg.get("ema") else []
    recipe += ["batch-norm refresh"] if cfg.get("bn_refresh") is True else []
    if recipe:
        rows.append(("training recipe", ", ".join(recipe)))
    if cfg.get("teachers"):
        seen = [t for t in run.meta.get("teachers", []) if isinstance(t, dict) and t.get("validation_images_seen")]
        rows.append(("distilled from", f"{', '.join(map(str, cfg['teachers']))} (weight "
                                       f"{cfg.get('distill_weight')}, temperature {cfg.get('distill_temperature')})"
                     + "".join(f"; {t.get('run')} trained on {t['validation_images_seen']:,} of the validation "
                               "images, so the validation figures are optimistic" for t in seen)))
    rows.append(("normalisation", f"mean {run.norm['mean']}, std {run.norm['std']}"))
    rows.append(("command", " ".join(map(str, run.meta.get("command", []))) or "-"))
    rows.append(("versions", ", ".join(f"{k} {v}" for k, v in run.meta.get("versions", {}).items())))
    return c.page.section("summary", "Summary") + head + _kv_table(rows)


def provenance_section(c: Context) -> str:
    data = c.predictor.run.meta.get("data", {})
    rows = [("source", str(data.get("source", "?")))]
    for f, sums in (data.get("files") or {}).items():
        rows.append((f, ", ".join(f"{a} {b}" for a, b in sums.items()) if isinstance(sums, dict) else str(sums)))
    for key, v in data.items():
        if key not in ("source", "files"):
            rows.append((key, v if isinstance(v, (str, int, float)) else str(v)))
    return "<h3>Data provenance</h3>" + _kv_table(rows)


def network_section(c: Context) -> str:
    from tegaki import diagram

    spec = c.predictor.spec
    return (c.page.section("network", "Network") + c.page.figure(diagram.draw(spec, title=c.name), "network diagram",
                                                                 dpi=110)
            + f"<pre>{html.escape(spec.summary())}</pre>")


def curves_section(c: Context) -> str:
    hist = c.predictor.run.history()
    head = c.page.section("curves", "Learning curves")
    if not (hist and all(k in hist[0] for k in ("train_loss", "valid_loss", "train_acc", "valid_acc"))):
        return head + c.page.p("This run has no per-epoch history (history.csv).", "note")
    splits = "training and validation splits" if figures.has_validation(hist) else "training set"
    return head + c.page.figure(figures.learning_curves(hist, c.name), "learning curves",
                                f"loss and accuracy per epoch on the {splits}", dpi=110)


def accuracy_section(c: Context) -> str:
    return c.page.section("accuracy", "Accuracy per class") + _class_table(c.ev, c.classes)


def confusion_section(c: Context) -> str:
    fig = figures.confusion_matrix(c.ev.cm, c.classes, f"{c.name} on {c.dataset.name}: {c.ev.accuracy:.2%}")
    return c.page.section("confusion", "Confusion matrix") + c.page.figure(
        fig, "confusion matrix", "rows: true class, columns: predicted class (colour on a log scale)", dpi=110)


def calibration_section(c: Context) -> str:
    """ECE, NLL and Brier score of the calibrated probabilities (and of the raw softmax), the
    temperature and where it was fitted, and the reliability diagram."""
    from tegaki.evaluate import calibration_metrics

    head = c.page.section("calibration", "Calibration")
    rec = c.predictor.calibration
    after = c.ev.calibration()
    rows = [("calibrated (shown everywhere)", f"ECE {after['ece']:.2%}, NLL {after['nll']:.4f}, "
                                              f"Brier {after['brier']:.4f}")]  # ECE as evaluate and the figure give it
    if rec:
        raw = calibration_metrics(softmax(c.feats["logits"].astype(np.float64)), c.labels)
        rows.insert(0, ("plain softmax (T = 1)", f"ECE {raw['ece']:.2%}, NLL {raw['nll']:.4f}, Brier {raw['brier']:.4f}"))
        rows.append(("temperature", f"{rec['temperature']:.4f}, fitted on the {fitted_on(rec)}"))
        ood = rec.get("ood")
        if ood:
            rows.append(("'not a digit' below", f"score {ood['not_a_digit_below']:.3f}; 'not sure' below "
                                                f"{ood['not_sure_below']:.3f} or under {ood['not_sure_confidence']:.0%}"))
    note = "" if rec else c.page.p("This run has no calibration in model.json: these are the plain softmax's.", "note")
    fig = figures.reliability(c.ev.reliability(), after, f"{c.name} on {c.dataset.name}")
    return head + note + _kv_table(rows) + c.page.figure(
        fig, "reliability diagram", "accuracy against confidence in 15 bins; a calibrated model follows the diagonal",
        dpi=110)


def _mistake_cards(c: Context, wrong: np.ndarray) -> tuple[list[str], list[str]]:
    """A card per mistake (the digit, its true label and top-2, linked to its saliency card) and the
    saliency cards (the digit, saliency for the predicted and for the true class, linked back)."""
    classes, probs, labels, pred, images, img = c.classes, c.probs, c.labels, c.pred, c.images, c.page.img
    g_pred = c.look.saliency(images[wrong], pred[wrong])[:, 0]  # (W, H, W)
    g_true = c.look.saliency(images[wrong], labels[wrong])[:, 0]
    cards, sal_cards = [], []
    short = max(len(str(k)) for k in classes) <= 3  # digits: "top-2: 6 99.8% · 5 0.1%" fits a card's line
    for j, i in enumerate(wrong):
        top2 = np.argsort(-probs[i])[:2]
        t2 = (" · " if short else "<br>").join(f"{html.escape(classes[k])}&nbsp;{_sure(probs[i, k])}"
                                                for k in top2)  # long class names: one per line, not cut off
        cards.append(f'<div class="card" id="m{i}"><a href="#s{i}">{img(array_png(images[i]), f"test digit {i}")}'
                     f'</a><br>true <b>{html.escape(classes[labels[i]])}</b><br>'
                     f'<span{" class=nw" if short else ""}>top-2: {t2}</span>'
                     f'<br><a href="#s{i}">saliency</a> · #{i}</div>')
        v = max(float(np.abs(g_pred[j]).max()), float(np.abs(g_true[j]).max())) or 1.0
        sal_cards.append(
            f'<div class="card sal" id="s{i}">{img(array_png(images[i]), f"digit {i}")} '
            f'{img(saliency_png(images[i], g_pred[j], v), f"saliency for {classes[pred[i]]}")} '
            f'{img(saliency_png(images[i], g_true[j], v), f"saliency for {classes[labels[i]]}")}<br>'
            f'#{i}: input · for predicted {html.escape(classes[pred[i]])} · for true '
            f'{html.escape(classes[labels[i]])} <a href="#m{i}">back</a></div>')
    return cards, sal_cards


def mistakes_section(c: Context, cards: list[str]) -> str:
    head = c.page.section("mistakes", f"Misclassified test {figures.things(c.classes)}")
    if not cards:
        return head + c.page.p(f"No test {figures.thing(c.classes)} is misclassified.", "note")
    n_wrong = int((c.pred != c.labels).sum())
    note = (f"{n_wrong} of {len(c.labels):,} test {figures.things(c.classes)} are misclassified; the {len(cards)} most confident "
            "mistakes are shown. Each shows its true label and the two most probable classes; click one "
            "for its saliency maps.")
    return head + c.page.p(note, "note") + '<div class="gallery">' + "".join(cards) + "</div>"


def saliency_section(c: Context, sal_cards: list[str]) -> str:
    if not sal_cards:
        return ""
    note = ("|d logit / d pixel| for the predicted class and for the true class (same colour scale per digit, "
            "the digit faintly underneath): bright pixels are those whose change would move that class's score "
            "most.")
    return (c.page.section("saliency", "Saliency of the mistakes") + c.page.p(note, "note")
            + '<div class="gallery">' + "".join(sal_cards) + "</div>")


def mistakes_and_saliency(c: Context) -> str:
    """The gallery of mistakes and, as the next section, their saliency maps (the cards link both ways)."""
    cards, sal_cards = _mistake_cards(c, c.ev.misclassified()[:c.gallery_limit])
    return mistakes_section(c, cards) + "\n" + saliency_section(c, sal_cards)


def filters_section(c: Context) -> str:
    run, convs = c.predictor.run, I.conv_layers(c.predictor.spec)
    out = [c.page.section("filters", "Filters")]
    if not convs:
        return out[0] + c.page.p(f"{c.name} has no conv layers, so there are no filters to show.", "note")
    before = run.initial_weights()
    if before is None:
        out.append(c.page.p("This run did not keep its initial weights (initial.safetensors): filters after "
                            "training only.", "note"))
    out += [c.page.figure(figures.filters(before, run.weights, layer), f"filters of {layer}") for layer in convs]
    return "".join(out)


def digit_section(c: Context) -> str:
    index = c.index if 0 <= c.index < len(c.images) else 0
    x, p_one, target = c.images[index], c.probs[index], int(c.probs[index].argmax())
    page, classes = c.page, c.classes
    out = [page.section("digit", f"Inside the network: test {figures.thing(c.classes)} #{index}"),
           page.p(f"true {classes[c.labels[index]]}, predicted {classes[target]} ({p_one.max():.1%}).", "note")]
    maps = c.look.feature_maps(x)
    if maps:
        out.append(page.figure(figures.feature_maps(x, maps, I.layer_shapes(c.predictor.spec),
                                                    "feature maps of every conv and pool layer"), "feature maps"))
    out.append(page.figure(figures.activations(c.look.dense_activations(x), classes), "dense activations",
                           "every dense layer's units (after its activation function) and the output probabilities"))
    fig = figures.attribution(x, c.look.saliency(x, target)[0, 0], c.look.occlusion(x, target),
                              f"why {classes[target]}?", figures.OCCLUSION_NOTE)
    out.append(page.figure(fig, "saliency and occlusion"))
    return "".join(out)


def pca_section(c: Context) -> str:
    f = c.feats[c.layer]
    z, ratio = I.pca_2d(f)
    title = (f"PCA of {c.layer} ({f.shape[1]} features), {len(f):,} test {figures.things(c.classes)}; "
             f"axes explain {ratio[0]:.0%} + {ratio[1]:.0%}")
    return (c.page.section("embedding", "Embedding of the penultimate layer")
            + c.page.figure(figures.embedding(z, c.labels, c.classes, title), "PCA embedding",
                            title + " of the variance; colour: true class"))


def tsne_section(c: Context) -> str:
    f = c.feats[c.layer]
    sample = I.sample_indices(len(f), c.tsne_sample)
    title = f"t-SNE of {c.layer}, a random sample of {len(sample):,} test {figures.things(c.classes)}"
    return c.page.figure(figures.embedding(I.tsne_2d(f[sample]), c.labels[sample], c.classes, title),
                         "t-SNE embedding", title + f" (perplexity {I.tsne_perplexity(len(sample)):g}, 500 iterations); "
                                                    "colour: true class")


# (name for the timings, section) in page order
SECTIONS: list[tuple[str, Callable[[Context], str]]] = [
    ("summary", summary_section), ("provenance", provenance_section), ("network", network_section),
    ("learning curves", curves_section), ("per-class table", accuracy_section), ("confusion", confusion_section),
    ("calibration", calibration_section),
    ("mistakes and saliency", mistakes_and_saliency), ("filters", filters_section), ("one digit", digit_section),
    ("PCA", pca_section), ("t-SNE", tsne_section),
]


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
    """Write the HTML report of the predictor's run on `dataset`'s test set to `out` (atomically)."""
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    def timed(name: str, fn, *a, **kw):
        t0 = time.perf_counter()
        result = fn(*a, **kw)
        timings[name] = time.perf_counter() - t0
        log(f"  {name}: {timings[name]:.1f} s")
        return result

    run = predictor.run
    page = Page(f"tegaki report: {predictor.spec.name}" + (f" ({run.path.name})" if run.path else ""))
    c = timed("forward pass over the test set", forward, predictor, dataset, page, index=index,
              gallery_limit=gallery_limit, tsne_sample=tsne_sample)
    parts = [timed(name, section, c) for name, section in SECTIONS]
    seconds = time.perf_counter() - t_start
    text = page.render(parts, f"made by tegaki report in {seconds:.1f} s on {time.strftime('%Y-%m-%d %H:%M:%S')}; "
                              f"{page.images} images embedded; no external resources.")
    atomic_write_text(out, text)
    return ReportResult(Path(out), seconds, page.images, len(text.encode()), c.ev.accuracy, timings)
