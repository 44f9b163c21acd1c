"""`tegaki data list|fetch|info NAME`: which datasets there are, fetch one, describe one."""

from __future__ import annotations

from tegaki.commands.common import load_data
from tegaki.errors import TegakiError


def register(subparsers) -> None:
    d = subparsers.add_parser("data", help="list, fetch or describe datasets")
    d.add_argument("action", choices=["list", "fetch", "info"])
    d.add_argument("name", nargs="?", help="mnist, fashion-mnist, kmnist, sklearn-digits or folder:PATH")
    d.add_argument("--data-dir", help="a folder holding the four IDX files")
    d.set_defaults(func=cmd_data)


def cmd_data(args) -> int:
    from tegaki.data import sources

    if args.action == "list":
        for r in sources.list_datasets():
            print(f"{r['name']:<16} {r['description']}")
        return 0
    if not args.name:
        raise TegakiError(f"'tegaki data {args.action}' needs a dataset name, e.g. mnist (see 'tegaki data list')")
    if args.action == "fetch":
        if args.name not in sources.SOURCES:
            if args.name in sources.FALLBACKS or args.name.startswith(("folder:", "idx:")):
                raise TegakiError(f"{args.name} is not downloaded: it is already on this machine or comes with a "
                                  f"package; see 'tegaki data info {args.name}'")
            sources.locate(args.name)  # raises: unknown dataset
        ds = load_data(args, args.name)
        state = "checksums verified" if ds.provenance.get("verified") else "not verified"
        print(f"{args.name}: {len(ds.train_labels):,} train and {len(ds.test_labels):,} test images, {state}; "
              f"{ds.provenance.get('source')}")
        return 0
    ds = load_data(args, args.name, fetch=False) if args.name in sources.SOURCES else load_data(args, args.name)
    import numpy as np

    print(f"dataset   {ds.name}")
    print(f"source    {ds.provenance.get('source')}")
    print(f"train     {ds.train_images.shape[0]:,} images {ds.train_images.shape[1]}x{ds.train_images.shape[2]}")
    print(f"test      {ds.test_images.shape[0]:,} images")
    print(f"classes   {', '.join(ds.classes)}")
    print("per class (train / test):")
    tr = np.bincount(ds.train_labels, minlength=len(ds.classes))
    te = np.bincount(ds.test_labels, minlength=len(ds.classes))
    for i, c in enumerate(ds.classes):
        print(f"  {c:<12} {tr[i]:6d} / {te[i]:5d}")
    if ds.provenance.get("files"):
        print(f"files ({'checksums verified' if ds.provenance.get('verified') else 'not verified'}):")
    for f, c in ds.provenance.get("files", {}).items():
        print(f"  {f}: sha256 {c.get('sha256')}")
    return 0
