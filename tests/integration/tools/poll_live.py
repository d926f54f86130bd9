"""poll_live.py URL SECONDS OUT: GETs URL every 0.1 s for SECONDS (1 s timeout each) and writes
{"count": n, "failures": n, "max_ms": ms} to OUT as JSON. Run inside the proxy's namespace."""
import json
import sys
import time
import urllib.request

url, seconds, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
count = failures = 0
worst = 0.0
end = time.monotonic() + seconds
while time.monotonic() < end:
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            ok = r.status == 200
    except Exception:  # noqa: BLE001 - any failure counts
        ok = False
    worst = max(worst, (time.monotonic() - t0) * 1000)
    count += 1
    failures += 0 if ok else 1
    time.sleep(0.1)
with open(out, "w") as f:
    json.dump({"count": count, "failures": failures, "max_ms": round(worst, 1)}, f)
