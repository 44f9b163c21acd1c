"""`tegaki summary REF`: a Keras-style table of a network's layers, shapes and parameters."""

from __future__ import annotations


def register(subparsers) -> None:
    s = subparsers.add_parser("summary", help="print a network's layers, shapes and parameter counts")
    s.add_argument("ref", help="a preset name, a spec file (.toml/.json) or a run folder")
    s.set_defaults(func=cmd_summary)


def cmd_summary(args) -> int:
    from tegaki.spec import resolve_spec

    spec = resolve_spec(args.ref)
    print(spec.summary())
    if spec.description:
        print(f"\n{spec.description}")
    if spec.train:
        print("recipe: " + ", ".join(f"{k}={v}" for k, v in spec.train.items()))
    return 0
