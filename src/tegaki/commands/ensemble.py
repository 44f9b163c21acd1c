"""`tegaki ensemble RUN RUN ... [--tta]`: average runs that were trained separately.

Runs trained one by one (on one machine or several, at the same time) with one `--split-seed`
share a validation split, so their ensemble is measured honestly on it as well as on the test
set; runs with different splits are measured on the test set only. Same table as
`tegaki train --ensemble N`.
"""

from __future__ import annotations

from pathlib import Path

from tegaki.errors import TegakiError


def _load_member(ref):
    from tegaki.run import load_run, members_hint

    try:
        return load_run(ref)
    except TegakiError as e:
        raise TegakiError(f"{e}{members_hint(ref)}") from None


def cmd_ensemble(args) -> int:
    from tegaki.commands.common import check_writable, load_test_data
    from tegaki.ensemble import ensemble_table, measure_ensemble, overlap_text
    from tegaki.fileio import write_json
    from tegaki.train import run_split

    if len(args.runs) < 2 and not args.tta:
        raise TegakiError("give two or more runs to average (or one run with --tta)")
    refs = list(dict.fromkeys(Path(r).resolve() if Path(r).exists() else r for r in args.runs))
    if len(refs) < len(args.runs):  # a run named twice would count twice in the average
        print(f"note: {len(args.runs) - len(refs)} run(s) named more than once; each is counted once")
        if len(refs) < 2 and not args.tta:
            raise TegakiError("give two or more different runs to average (or one run with --tta)")
    if args.out:
        check_writable(Path(args.out))  # before the work, not after it
    runs = [_load_member(r) for r in refs]
    first = runs[0]
    for r in runs[1:]:
        if r.spec.input_shape != first.spec.input_shape or r.classes != first.classes:
            raise TegakiError(f"{r.path} does not fit {first.path}: input {r.spec.input_shape} vs "
                              f"{first.spec.input_shape}, classes {r.classes} vs {first.classes}")
    ds = load_test_data(args, first)  # evaluate's checks: the runs' classes (by name) and image size
    splits = {run_split(r) for r in runs}
    valid_size = 0
    split_seed = 0
    if len(splits) == 1:
        split_seed, valid_size = splits.pop()
    else:
        print("note: the runs were validated on different splits (give them one --split-seed when training); "
              "measuring the test set only")
    res = measure_ensemble(runs, ds, split_seed, valid_size, tta=args.tta)
    names = [r.spec.name for r in runs]
    what = f"of {names[0]}" if len(set(names)) == 1 else "(" + ", ".join(names) + ")"
    print(f"{len(runs)} {'run' if len(runs) == 1 else 'runs'} {what} on {ds.name}\n")
    print(ensemble_table(res))
    overlap = overlap_text(res)
    if overlap:
        print("\n" + overlap)
    if args.out:
        write_json(Path(args.out), res)
        print(f"\nwrote {args.out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("ensemble", help="average the predictions of separately trained runs (and TTA)")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders of one recipe, ideally one --split-seed")
    p.add_argument("--tta", action="store_true", help="also average over small shifts and rotations of each image")
    p.add_argument("--dataset", help="default: the dataset the first run was trained on")
    p.add_argument("--data-dir", help="a folder holding the dataset's four IDX files")
    p.add_argument("--out", help="write the accuracies as JSON to this file")
    p.set_defaults(func=cmd_ensemble)
