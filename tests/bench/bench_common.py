"""Shared by the end-to-end benchmark drivers (e2e_rpc.py, e2e_udp.py), which run as scripts
from this directory: puts the integration tests' harness on sys.path and imports it, and gives
the machine facts each report starts with. Set `sys.dont_write_bytecode = True` before importing
it, as the drivers do."""
import os
import platform
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import harness  # noqa: E402,F401  (re-exported: `from bench_common import harness`)


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release()}
