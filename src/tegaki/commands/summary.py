"""`tegaki summary REF`: a Keras-style table of a network's layers, shapes and parameters.
`tegaki summary` alone lists the presets, one line each."""

from __future__ import annotations


def register(subparsers) -> None:
    s = subparsers.add_parser("summary", help="print a network's layers, shapes and parameter counts "
                                              "(no argument: list the presets)")
    s.add_argument("ref", nargs="?", help="a preset name, a spec file (.toml/.json) or a run folder; "
                                          "leave it out to list the presets")
    s.set_defaults(func=cmd_summary)


def cmd_summary(args) -> int:
    from tegaki.spec import resolve_spec

    if args.ref is None:
        print(preset_table())
        return 0
    spec = resolve_spec(args.ref)
    print(spec.summary())
    if spec.description:
        print(f"\n{spec.description}")
    if spec.train:
        print("recipe: " + ", ".join(f"{k}={v}" for k, v in spec.train.items()))
    return 0


def preset_table() -> str:
    """Every preset: name, parameters, epochs and its description."""
    from tegaki.spec import load_preset, preset_names

    specs = [load_preset(n) for n in preset_names()]
    w = max(len(s.name) for s in specs) + 2
    rows = [f"{'preset':<{w}}{'parameters':>11}  {'epochs':>6}  description"]
    for s in specs:
        rows.append(f"{s.name:<{w}}{s.num_params():>11,}  {s.train.get('epochs', ''):>6}  {s.description}")
    return "\n".join(rows + ["", "tegaki summary NAME shows a preset's layers and recipe; "
                                 "tegaki train --preset NAME trains it"])
