"""Fuzzing the loaders: 1,500 mutated specs and 1,000 mutated run folders, each loaded in a process limited
to 3 GiB of address space; every one must load (and then work) or raise TegakiError, nothing else.

The cases come from tests/fuzz_cases.py, seeded: a failure names its case number, and
`python tests/fuzz_cases.py specs 12 1500 /tmp/x` replays it.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
LIMIT = 3 * 2**30


def limited():
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))


@pytest.mark.parametrize("kind, seed, n", [("specs", 12, 1500), ("runs", 7, 1000)])
def test_mutated_inputs_load_or_raise_tegaki_error(kind, seed, n, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent / "src"), str(HERE)]),
           "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(HERE / "fuzz_cases.py"), kind, str(seed), str(n), str(tmp_path)],
                       capture_output=True, text=True, env=env, preexec_fn=limited, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["other"] == [], res["other"][:10]
    assert res["loaded"] + res["refused"] == n
    # the mutations are neither all harmless nor all fatal
    assert res["loaded"] > n // 20 and res["refused"] > n // 4, res
