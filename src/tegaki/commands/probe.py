"""`tegaki probe RUN`: a trained network's hidden layers as features for scikit-learn classifiers.

Reads the activations of the raw pixels and of every hidden layer (or --layer) for the training
and test sets, fits each --classifier on them and prints a table of test accuracy and fit
seconds beside the network's own softmax accuracy. Kernel SVMs are fitted on a seeded random
subset of the training set (the table says how many digits each classifier saw).
"""

from __future__ import annotations

import time
from pathlib import Path

from tegaki.errors import TegakiError

DEFAULT_CLASSIFIERS = ("logreg", "svm")


def register(subparsers) -> None:
    from tegaki.commands.common import LOOK_ENGINES
    from tegaki.probe import CLASSIFIERS, MAX_TRAIN

    p = subparsers.add_parser("probe", help="hidden layers as features for logistic regression and SVMs",
                              description=__doc__.split("\n\n", 1)[1].strip())
    p.add_argument("run", help="a run folder, or 'bundled' for the model that ships with tegaki")
    p.add_argument("--layer", action="append", metavar="NAME",
                   help="a layer name or 'pixels' (repeat or comma-separate; default: pixels and every hidden layer)")
    p.add_argument("--classifier", action="append", metavar="NAME",
                   help=f"{' | '.join(CLASSIFIERS)} (repeat or comma-separate; default: "
                        f"{', '.join(DEFAULT_CLASSIFIERS)})")
    p.add_argument("--train-size", type=int, metavar="N",
                   help="training digits for every classifier (default: " +
                        ", ".join(f"{k} {'all' if v is None else f'{v:,}'}" for k, v in MAX_TRAIN.items()) + ")")
    p.add_argument("--save-features", metavar="FILE.npz",
                   help="also save the features as .npz: the training digits the classifiers saw "
                        "(--train-size 60000 for all) and the whole test set")
    p.add_argument("--plot", metavar="FILE.png", help="also draw the table as a chart")
    p.add_argument("--threads", type=int, metavar="N",
                   help="threads for the network and the classifiers (default: the idle cores for the network, "
                   "1 for the classifiers, steady on a busy machine; 0: all cores)")
    p.add_argument("--seed", type=int, default=0, help="seed of the training subset order (default 0)")
    p.add_argument("--dataset", help="default: the dataset the run was trained on")
    p.add_argument("--data-dir", help="a folder holding the dataset's four IDX files")
    p.add_argument("--engine", choices=LOOK_ENGINES, default="torch",
                   help="engine that runs the network (default torch; onnx computes logits only)")
    p.set_defaults(func=cmd_probe)


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for item in values or [] for v in item.split(",") if v.strip()]


def cmd_probe(args) -> int:
    from tegaki import inspect as I
    from tegaki import probe as P
    from tegaki.commands.common import apply_threads, load_predictor, load_test_data

    classifiers = _split(args.classifier) or list(DEFAULT_CLASSIFIERS)
    bad = [c for c in classifiers if c not in P.CLASSIFIERS]
    if bad:
        raise TegakiError(f"unknown classifier {bad[0]!r}; choose one of {', '.join(P.CLASSIFIERS)}")
    if args.threads is not None and args.threads < 0:
        raise TegakiError(f"--threads must be >= 0 (0: all cores), got {args.threads}")
    if args.train_size is not None and args.train_size < 10:
        raise TegakiError(f"--train-size must be at least 10, got {args.train_size}")
    if args.plot and not Path(args.plot).resolve().parent.is_dir():
        raise TegakiError(f"--plot {args.plot}: the folder does not exist")
    if args.save_features and not args.save_features.endswith(".npz"):
        raise TegakiError(f"--save-features {args.save_features}: give a file name ending in .npz")
    if args.save_features and not Path(args.save_features).resolve().parent.is_dir():
        raise TegakiError(f"--save-features {args.save_features}: the folder does not exist")
    from tegaki import threads

    apply_threads(threads.cores() if args.threads == 0 else args.threads)  # the network's
    pred = load_predictor(args)
    spec = pred.spec
    layers = _split(args.layer) or P.default_layers(spec)
    for name in layers:
        I.check_layer(spec, name)
    layers = list(dict.fromkeys("pixels" if l == "input" else l for l in layers))
    ds = load_test_data(args, pred.run)
    sizes = {c: args.train_size if args.train_size is not None else P.MAX_TRAIN[c] for c in classifiers}
    n_total = len(ds.train_labels)
    need = None if any(v is None for v in sizes.values()) else max(sizes.values())
    t0 = time.perf_counter()
    print(f"probe {spec.name} ({pred.run.path}) on {ds.name}: {n_total:,} training and "
          f"{len(ds.test_labels):,} test digits, engine {args.engine}")
    feats, net_acc = P.extract(pred, ds, layers, train_rows=need, seed=args.seed, log=print)
    if args.save_features:
        P.save_features(args.save_features, feats)
        print(f"saved features to {args.save_features} (np.load(path, allow_pickle=False))")
    results = []
    fit_threads = 1 if args.threads is None else args.threads or None
    for c in classifiers:
        for name in layers:
            r = P.fit(feats[name], c, sizes[c], seed=args.seed, threads=fit_threads)
            print(f"  {c:<10} on {r.label:<16} {r.dims:>6,} features, {r.train_size:>6,} digits: "
                  f"{r.accuracy:.2%} (fit {r.fit_seconds:.1f} s, test {r.predict_seconds:.1f} s)", flush=True)
            results.append(r)
    print()
    print(P.table(results, net_acc, spec.name))
    if args.plot:
        from tegaki import figures

        figures.save(figures.probe_accuracy(results, net_acc, f"{spec.name} on {ds.name}: hidden layers as features"),
                     args.plot)
        print(f"\nwrote {args.plot}")
    print(f"\ntotal {time.perf_counter() - t0:.1f} s")
    return 0
