"""``examples/closed_loop`` in its reduced mode: real data, a real hub on loopback, v1 -> feedback -> v2."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "closed_loop" / "closed_loop.py"


def test_closed_loop_quick(beauty_dir: Path, tmp_path: Path) -> None:
    if importlib.util.find_spec("torch") is None:
        pytest.skip("edgerec build needs the [build] extra (torch); the co-occurrence fallback is too slow for CI")
    env = {**os.environ, "EDGEREC_DATA_DIR": str(beauty_dir.parent), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--poll-interval", "0.5", "--work",
                           str(tmp_path / "work")], capture_output=True, text=True, timeout=400, env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    fields = dict(part.split("=", 1) for part in result.split()[1:])
    assert fields["v1"] != fields["v2"] and int(fields["events"]) > 1000
    assert "edge swapped to " + fields["v2"] in proc.stdout
