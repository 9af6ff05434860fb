import os
import subprocess
import sys


def test_import_loads_no_extra() -> None:
    code = (
        "import sys, edgerec_sdk, edgerec_sdk.cli; "
        "r = edgerec_sdk.Recommender.demo(); r.recommend('u', k=3); r.close(); "
        "bad = [m for m in ('edgerec_sdk.hub', 'edgerec_sdk.train', 'torch', 'django', 'flask', 'onnx', "
        "'matplotlib', 'redis') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == ""


def test_import_starts_no_thread() -> None:
    code = "import threading, edgerec_sdk; print(threading.active_count())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "1"


def test_d21_import_loads_no_onnxruntime_and_serving_starts_no_native_thread() -> None:
    # Native threads, not only Python ones: onnxruntime's import-time telemetry thread made every process
    # forked afterwards hang at exit (docs/reliability.md, D21).
    code = (
        "import os, sys, numpy; tasks = lambda: len(os.listdir('/proc/self/task')); base = tasks(); "
        "import edgerec_sdk; loaded = 'onnxruntime' in sys.modules; after_import = tasks() - base; "
        "r = edgerec_sdk.Recommender.demo(); r.recommend('u', k=3, history=[r.recommend('u', k=1).item_ids[0]]); "
        "print(loaded, after_import, tasks() - base, os.environ.get('ORT_DISABLE_TELEMETRY')); r.close()"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["False", "0", "0", "1"]


def test_d21_onnxruntime_imported_first_is_warned_about() -> None:
    code = "import logging, onnxruntime, edgerec_sdk; logging.basicConfig(); edgerec_sdk.Recommender.demo()"
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True,
                         env=env)
    assert "ORT_DISABLE_TELEMETRY=1" in out.stderr and "hang at exit" in out.stderr
