"""The data package does not load torch: parsing --augment or finding a dataset works without it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def torch_loaded_after(code: str) -> bool:
    """Whether `code`, run in a fresh interpreter, leaves torch imported (it must run without error)."""
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-c", "import sys\n" + code + "\nprint('torch' in sys.modules)"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip() == "True"


def test_augment_and_sources_import_without_torch():
    assert not torch_loaded_after(
        "import tegaki.data.augment as a, tegaki.data.sources, tegaki.data.dataset, tegaki.data.fallbacks\n"
        "import tegaki.data.idx, tegaki.data.download\n"
        "assert a.parse_kinds('affine+elastic') == ('affine', 'elastic')\n"
        "assert a.Augmenter.parse('thickness', strength=0.5).describe() == 'thickness (strength 0.5)'")


def test_the_check_can_fail():
    # the same probe sees torch once something really imports it (the augmenter applied to a batch)
    assert torch_loaded_after(
        "import numpy as np\n"
        "import tegaki.data.augment as a\n"
        "y = a.Augmenter(('affine',), strength=0.0)(np.zeros((1, 1, 8, 8), np.float32))\n"
        "assert y.shape == (1, 1, 8, 8)")
