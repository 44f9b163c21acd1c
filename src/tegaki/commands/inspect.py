"""`tegaki inspect RUN`: pictures of what a trained network learned and how it sees one digit.

Writes PNGs into --out (default RUN/inspect/, or ./inspect-bundled for the bundled model): the network diagram, every conv layer's filters
before and after training, the feature maps of every conv and pool layer for one input, the
activations of every dense layer and the output probabilities, saliency and occlusion maps,
and PCA / t-SNE embeddings of the penultimate layer's features of the test set.
"""

from __future__ import annotations

import time
from pathlib import Path

from tegaki.commands.common import add_data_engine_args, apply_threads, check_writable, load_predictor, load_test_data
from tegaki.errors import TegakiError

PARTS = ("diagram", "filters", "maps", "activations", "saliency", "embedding")


def register(subparsers) -> None:
    p = subparsers.add_parser("inspect", help="pictures of filters, feature maps, activations, saliency, embeddings",
                              description=__doc__.split("\n\n", 1)[1].strip())
    p.add_argument("run", help="a run folder, or 'bundled' for the model that ships with tegaki")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--image", metavar="PATH", help="an image file (any size; preprocessed like MNIST)")
    src.add_argument("--index", type=int, default=None, metavar="N", help="a test-set digit by index (default 0)")
    p.add_argument("--out", metavar="DIR", help="where to write the pictures (default RUN/inspect; ./inspect-bundled for the bundled model)")
    p.add_argument("--only", metavar="PARTS", help=f"comma-separated subset of: {', '.join(PARTS)} (default all)")
    p.add_argument("--tsne-sample", type=int, default=3000, metavar="N",
                   help="test digits in the t-SNE map, at least 10 (default 3000; 0 skips t-SNE)")
    add_data_engine_args(p)
    p.set_defaults(func=cmd_inspect)


def parse_parts(only: str | None) -> list[str]:
    if not only:
        return list(PARTS)
    parts = [s.strip() for s in only.split(",") if s.strip()]
    bad = [s for s in parts if s not in PARTS]
    if bad or not parts:
        raise TegakiError(f"--only: unknown part(s) {', '.join(bad) or '(none given)'}; choose from {', '.join(PARTS)}")
    return parts


def pick_input(args, ds):
    """(28x28 uint8 image, label or None, description) from --image or --index."""
    import numpy as np

    from tegaki import figures

    if args.image:
        from tegaki.data.preprocess import to_mnist

        pre = to_mnist(args.image)
        if pre.empty:
            raise TegakiError(f"{args.image}: no digit found (the image is blank or has no ink that stands out); "
                              "give an image with a visible digit")
        return pre.image, None, f"image {Path(args.image).name}"
    index = 0 if args.index is None else args.index
    n = len(ds.test_labels)
    if not 0 <= index < n:
        raise TegakiError(f"--index {index} is out of range: the {ds.name} test set has {n:,} digits (0 to {n - 1})")
    return (np.asarray(ds.test_images[index]), int(ds.test_labels[index]),
            f"test {figures.thing(ds.classes)} #{index}")


def default_out(run) -> Path:
    """RUN/inspect, or ./inspect-bundled for the bundled model (never into the installed package)."""
    from tegaki.run import is_bundled

    return Path("inspect-bundled") if is_bundled(run.path) else run.path / "inspect"


def check_args(args) -> list[str]:
    """The parts to draw, after the checks that need no model."""
    parts = parse_parts(args.only)
    from tegaki.inspect import TSNE_MIN

    if args.tsne_sample != 0 and args.tsne_sample < TSNE_MIN:
        raise TegakiError(f"--tsne-sample must be 0 (no t-SNE map) or at least {TSNE_MIN}, got {args.tsne_sample}")
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise TegakiError(f"--out {args.out} is a file; give a folder for the pictures")
    if args.image and not Path(args.image).is_file():
        raise TegakiError(f"{args.image}: no such image file")
    return parts


def drop_conv_parts(spec, parts: list[str], convs: list[str]) -> list[str]:
    if convs:
        return parts
    if set(parts) <= {"filters", "maps"}:  # nothing would be left to draw
        raise TegakiError(f"{spec.name} has no conv layers, so it has no {' or '.join(parts)} to show; "
                          "try --only activations,saliency,embedding")
    if "filters" in parts or "maps" in parts:
        print(f"note: {spec.name} has no conv layers: no filters or feature maps; writing the rest")
    return [p for p in parts if p not in ("filters", "maps")]


def cmd_inspect(args) -> int:
    from tegaki import inspect as I

    parts = check_args(args)
    apply_threads(args.threads)
    pred = load_predictor(args)
    run, spec = pred.run, pred.spec
    convs = I.conv_layers(spec)
    parts = drop_conv_parts(spec, parts, convs)
    need_input = any(p in parts for p in ("maps", "activations", "saliency"))
    need_data = "embedding" in parts or (need_input and not args.image)
    ds = load_test_data(args, run) if need_data else None
    image, label, what = pick_input(args, ds) if need_input else (None, None, "")
    out = Path(args.out) if args.out else default_out(run)
    check_writable(out)
    t0 = time.perf_counter()
    files = draw_parts(pred, parts, out, image, label, what, ds, args.tsne_sample)
    print(f"wrote {len(files)} pictures in {time.perf_counter() - t0:.1f} s:")
    for f in files:
        print(f"  {f}")
    return 0


def draw_parts(pred, parts, out: Path, image, label, what: str, ds, tsne_sample: int) -> list[Path]:
    """Write the pictures of `parts` into `out`; the paths written, in order."""
    from tegaki import diagram, figures
    from tegaki import inspect as I

    run, spec, classes = pred.run, pred.spec, pred.classes
    look = I.Inspector(pred)
    files: list[Path] = []
    if image is not None:
        probs = look.probabilities(image)[0]
        top = int(probs.argmax())
        truth = f", true {classes[label]}" if label is not None else ""
        print(f"{what}: predicted {classes[top]} ({probs[top]:.1%}){truth}")
        name = f"{classes[top]} ({figures.below_one(probs[top])}){truth}"
    if "diagram" in parts:
        files.append(figures.save(diagram.draw(spec, title=spec.name), out / "diagram.png"))
    if "filters" in parts:
        before = run.initial_weights()
        if before is None:
            print("note: the run kept no initial weights (initial.safetensors): filters after training only")
        for c in I.conv_layers(spec):
            files.append(figures.save(figures.filters(before, run.weights, c), out / f"filters_{c}.png", dpi=100))
    if "maps" in parts:
        fig = figures.feature_maps(image, look.feature_maps(image), I.layer_shapes(spec),
                                   f"feature maps of {what}: predicted {name}")
        files.append(figures.save(fig, out / "feature_maps.png", dpi=100))
    if "activations" in parts:
        fig = figures.activations(look.dense_activations(image), classes, f"activations for {what}")
        files.append(figures.save(fig, out / "activations.png", dpi=100))
    if "saliency" in parts:
        fig = figures.attribution(image, look.saliency(image, top)[0, 0], look.occlusion(image, top),
                                  f"{what}: why {classes[top]}?", figures.OCCLUSION_NOTE)
        files.append(figures.save(fig, out / "saliency_occlusion.png", dpi=100))
    if "embedding" in parts:
        files += draw_embeddings(look, spec, ds, classes, out, tsne_sample)
    return files


def draw_embeddings(look, spec, ds, classes, out: Path, tsne_sample: int) -> list[Path]:
    """PCA of the penultimate layer over the test set, and t-SNE of a sample of it (unless 0)."""
    import numpy as np

    from tegaki import figures
    from tegaki import inspect as I

    pen = I.penultimate(spec) or "pixels"
    f = look.features(ds.test_images, [pen])[pen]
    labels = np.asarray(ds.test_labels)
    z, ratio = I.pca_2d(f)
    title = (f"PCA of {pen} ({f.shape[1]} features), {len(f):,} {ds.name} test {figures.things(classes)}; "
             f"axes explain {ratio[0]:.0%} + {ratio[1]:.0%}")
    files = [figures.save(figures.embedding(z, labels, classes, title), out / "embedding_pca.png", dpi=100)]
    if tsne_sample:
        idx = I.sample_indices(len(f), tsne_sample)
        title = f"t-SNE of {pen}, a random sample of {len(idx):,} test {figures.things(classes)}"
        files.append(figures.save(figures.embedding(I.tsne_2d(f[idx]), labels[idx], classes, title),
                                  out / "embedding_tsne.png", dpi=100))
    return files
