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
