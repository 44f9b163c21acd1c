"""Execute the notebooks and save one picture of each for the README (docs/images/notebook-*.png).

    TEGAKI_NOTEBOOK_QUICK=1 TEGAKI_DATA_DIR=../shared/data python docs/notebooks/render.py

With TEGAKI_NOTEBOOK_QUICK=1 each notebook runs on 3,000 training digits for one epoch (what the
README's pictures show); without it, the full budgets of the source documents.
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import nbclient
import nbformat

HERE = Path(__file__).resolve().parent
IMAGES = HERE.parent / "images"
# notebook -> which of its pictures to keep (0 = the first it draws)
PICK = {"1-nolearn-convnet": 2, "2-lenet-tutorial": 2, "3-keras-lecture": 2, "4-cnn-drawing": 1,
        "5-numpy-from-scratch": 1}


def pictures(path: Path) -> list[bytes]:
    nb = nbformat.read(path, as_version=4)
    nbclient.NotebookClient(nb, timeout=3600, kernel_name="python3").execute()
    return [base64.b64decode(o["data"]["image/png"]) for c in nb.cells if c.cell_type == "code"
            for o in c.outputs if "image/png" in o.get("data", {})]


def main() -> int:
    for name, k in PICK.items():
        pics = pictures(HERE / f"{name}.ipynb")
        out = IMAGES / f"notebook-{name}.png"
        out.write_bytes(pics[min(k, len(pics) - 1)])
        print(f"{out} ({len(pics)} pictures in the notebook)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
