"""Parity with the canonical environments (gymnasium-robotics 1.4.2 on mujoco==3.3.7): runs tests/parity.py.

Marked `parity` (deselected by default; run with `pytest -m parity`): the first run creates the reference venv
(.venv-ref, a pip install of mujoco==3.3.7 and gymnasium-robotics==1.4.2), and a run takes a few minutes.
PARITY_IDS="FetchReach-v0 HandReach-v0" restricts the run to those ids (tests/mutation_check.py uses it).
"""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parity
def test_parity_with_canonical_envs(tmp_path):
    import envs

    out = tmp_path / "parity.json"
    ids = os.environ.get("PARITY_IDS", "").split() or list(envs.ENV_IDS)
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "tests", "parity.py"), "--out", str(out), "--ids", *ids],
        cwd=REPO, capture_output=True, text=True, timeout=1800,
    )
    report = proc.stdout[-20000:] + proc.stderr[-5000:]
    assert out.exists(), f"parity.py wrote no summary (exit {proc.returncode}):\n{report}"
    summary = json.loads(out.read_text())
    missing = sorted(set(ids) - set(summary["compared"]))
    assert not missing, f"not compared with a canonical environment: {missing}\n{report}"
    assert proc.returncode == 0 and summary["ok"], f"parity check failed:\n{report}"
