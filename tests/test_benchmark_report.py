"""docs/benchmarks.md cannot drift from the measurements: its tables are generated from the one current
results file of each benchmark (``benchmarks/results/<name>.jsonl``) by ``benchmarks/report.py``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def test_tables_match_the_current_results_files() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "report.py"), "--check"], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr


def test_one_current_file_per_benchmark_each_shown_and_saying_where_it_ran() -> None:
    doc = (ROOT / "docs" / "benchmarks.md").read_text()
    files = sorted(RESULTS.glob("*.jsonl"))
    assert len(files) >= 5
    for path in files:
        assert re.fullmatch(r"[a-z_0-9]+\.jsonl", path.name), f"{path.name}: one file per benchmark, no dated runs"
        assert f"<!-- report:{path.stem} -->" in doc, f"{path.name} has no section in docs/benchmarks.md"
        assert (ROOT / "docs" / "images" / f"bench-{path.stem}.png").is_file()
        first = json.loads(path.read_text().splitlines()[0])
        assert first["bench"] == "machine" and {"cpu", "date", "commit", "script", "argv"} <= first.keys()
        assert (ROOT / "benchmarks" / first["script"]).is_file()


def test_a_benchmark_writing_to_a_pipe_leaves_the_pipe_a_pipe(tmp_path: Path) -> None:
    import stat
    import threading

    fifo = tmp_path / "out"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.extend(fifo.read_text().splitlines()), daemon=True)
    reader.start()
    script = "import sys; sys.path.insert(0, sys.argv[1]); from _bench import emit, start; start(sys.argv[2]); emit(bench='x')"
    benchmarks = Path(__file__).resolve().parents[1] / "benchmarks"
    subprocess.run([sys.executable, "-c", script, str(benchmarks), str(fifo)], check=True, timeout=120)
    reader.join(timeout=60)
    assert not reader.is_alive()
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)  # not replaced by a regular file
    assert not (tmp_path / "out.partial").exists()
    assert [json.loads(line)["bench"] for line in got] == ["machine", "x"]
