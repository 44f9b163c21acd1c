"""`tegaki evaluate RUN`: accuracy, per-class report, confusion matrix, mistakes and curves of a run."""

from __future__ import annotations

from pathlib import Path

from tegaki.commands.common import apply_threads, default_out, load_test_data, slug, trained_dataset


def register(subparsers) -> None:
    from tegaki.engines import ENGINES

    e = subparsers.add_parser("evaluate", help="accuracy, per-class report, confusion matrix and mistakes of a run")
    e.add_argument("run", help="a run folder, or 'bundled' for the model that ships with tegaki")
    e.add_argument("--dataset", help="default: the dataset the run was trained on")
    e.add_argument("--data-dir", help="a folder holding the dataset's four IDX files")
    e.add_argument("--engine", choices=ENGINES, default="torch")
    e.add_argument("--out", help="where to write the pictures (default: the run folder; ./eval-bundled for the bundled model)")
    e.add_argument("--threads", type=int, help="CPU threads for torch and NumPy (default: all cores)")
    e.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args) -> int:
    from tegaki import figures
    from tegaki.evaluate import confusion_text, evaluate, report_text
    from tegaki.fileio import write_json
    from tegaki.predict import Predictor

    apply_threads(args.threads)
    pred = Predictor.load(args.run, engine=args.engine)
    run = pred.run
    name = args.dataset or trained_dataset(run) or "mnist"
    ds = load_test_data(args, run, name)
    ev = evaluate(pred, ds.test_images, ds.test_labels, run.classes)
    same = name == trained_dataset(run)
    out = Path(args.out) if args.out else default_out(run, "eval", None if same else f"eval-{slug(ds.name)}")
    print(f"{run.spec.name} on {ds.name} ({len(ds.test_labels):,} test images, engine {args.engine})")
    print(f"accuracy {ev.accuracy:.2%}   error {1 - ev.accuracy:.2%}\n")
    print(report_text(ev.cm, run.classes))
    print("\nconfusion matrix (rows: true, columns: predicted)")
    print(confusion_text(ev.cm, run.classes))
    write_json(out / "evaluation.json", {"dataset": ds.name, "engine": args.engine, **ev.metrics()})
    cm_title = f"{run.spec.name} on {ds.name}: {ev.accuracy:.2%}"
    files = [figures.save(figures.confusion_matrix(ev.cm, run.classes, cm_title), out / "confusion.png")]
    wrong = ev.misclassified()
    if len(wrong):
        fig = figures.misclassified(ds.test_images[wrong], ev.labels[wrong], ev.predictions[wrong],
                                    ev.probabilities[wrong], run.classes)
        files.append(figures.save(fig, out / "misclassified.png"))
    hist = run.history()
    if hist:
        files.append(figures.save(figures.learning_curves(hist, run.spec.name), out / "learning_curves.png"))
    print("\nwrote " + ", ".join(str(f) for f in files) + f", {out / 'evaluation.json'}")
    return 0
