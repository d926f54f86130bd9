#!/usr/bin/env python3
"""Checks the monitoring bundle under monitoring/ (docs/monitoring.md) with Debian's promtool and
prometheus.

    check_monitoring.py rules [--root DIR]       promtool check rules + promtool test rules, and
                                                  every recording rule and alert has tests (an
                                                  alert: a firing and a not-firing case) and a
                                                  section in docs/monitoring.md, whose PromQL
                                                  parses
    check_monitoring.py mutations [--root DIR]   each rule broken in a temporary copy (a recording
                                                  rule's value moved by 1; an alert that never
                                                  fires; one that fires when it should not; one
                                                  without its `for`) must make promtool test fail
    check_monitoring.py prometheus [--root DIR]  the rules loaded into a real prometheus on
                                                  127.0.0.1 scraping two fake sidecrypts (pages
                                                  in the shape of sidecrypt's /metrics): every
                                                  group evaluated, every rule healthy, node rules
                                                  joined with the node name, and every dashboard
                                                  query answered
    check_monitoring.py dashboard [--root DIR]   the Grafana dashboard: structure, datasource and
                                                  job variables, every expression parsed by promtool,
                                                  every metric it names exported or recorded

Exit 0 pass, 1 fail, 77 skip (promtool/prometheus missing outside CI; with CI=true that fails).
"""
import argparse
import copy
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

SKIP = 77
PROM_DIR = os.path.join("monitoring", "prometheus")
RULE_FILES = ("sidecrypt-rules.yml", "sidecrypt-alerts.yml")
DASHBOARD = os.path.join("monitoring", "grafana", "sidecrypt-rollout.json")

# The series sidecrypt exports (docs/monitoring.md lists them; /metrics is rendered in
# proxy/admin/status_render.cc). The dashboard may name only these, up, and recorded names.
EXPORTED = {
    "sidecrypt_up", "sidecrypt_ready", "sidecrypt_stage", "sidecrypt_keyring_keys",
    "sidecrypt_reloads_total", "sidecrypt_gossip_packets_total", "sidecrypt_gossip_streams_total",
    "sidecrypt_key_queries_total", "sidecrypt_rpc_total", "sidecrypt_census_peers",
    "sidecrypt_census_evictions_total", "sidecrypt_gossip_members", "sidecrypt_tcp_sessions_total",
    "sidecrypt_tcp_sessions_active", "sidecrypt_tcp_accept_errors_total",
    "sidecrypt_tcp_sessions_closed_total", "sidecrypt_loop_sessions_active",
    "sidecrypt_loop_rpc_handshakes_total",
    "sidecrypt_gossip_members_uncovered", "sidecrypt_http_requests_total",
    "sidecrypt_http_connections_total", "sidecrypt_http_connections_active",
    "sidecrypt_info", "sidecrypt_start_time_seconds", "sidecrypt_rollout_stage",
    "sidecrypt_keyring_key", "sidecrypt_reload_last_success", "sidecrypt_census_capacity",
    "sidecrypt_census_window_seconds", "sidecrypt_census_plaintext_peers",
    "sidecrypt_census_refused_peers", "sidecrypt_census_silent_members",
    "sidecrypt_census_key_peers", "sidecrypt_census_dropped_total", "sidecrypt_check_ok",
    "sidecrypt_peer_plaintext_total", "sidecrypt_peer_encrypted_total",
    "sidecrypt_udp_relay_packets_total", "sidecrypt_tls_certificate_expiry_seconds",
    "sidecrypt_tls_certificate_not_before_seconds", "sidecrypt_tls_peer_ca_last_seen_seconds",
    "sidecrypt_tls_peer_ca_peers", "sidecrypt_tls_watch_reloads_total",
    "sidecrypt_tls_watch_last_success",
}


def in_ci():
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def skip_or_fail(reason):
    if in_ci():
        print("FAIL in CI: " + reason, file=sys.stderr)
        sys.exit(1)
    print("SKIP: " + reason, file=sys.stderr)
    sys.exit(SKIP)


def need(*commands):
    missing = [c for c in commands if shutil.which(c) is None]
    if missing:
        skip_or_fail("%s not installed (Debian package prometheus, scripts/install-deps.sh)"
                     % " and ".join(missing))


def load_yaml(path):
    try:
        import yaml
    except ImportError:
        skip_or_fail("python3-yaml not installed (scripts/install-deps.sh)")
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def dump_yaml(doc, path):
    import yaml
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(doc, f, sort_keys=False, width=1000)


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


def rules_of(root):
    """[(file, group index, rule index, rule dict)] for every rule in both files."""
    out = []
    for name in RULE_FILES:
        doc = load_yaml(os.path.join(root, PROM_DIR, name))
        for gi, g in enumerate(doc["groups"]):
            for ri, r in enumerate(g["rules"]):
                out.append((name, gi, ri, r))
    return out


def test_files(root):
    d = os.path.join(root, PROM_DIR, "tests")
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".yml"))


# ----------------------------------------------------------------------------------------------
# rules: promtool check + test, and coverage


def cmd_rules(root):
    need("promtool")
    errors = []
    files = [os.path.join(root, PROM_DIR, f) for f in RULE_FILES]
    r = run(["promtool", "check", "rules"] + files)
    print(r.stdout + r.stderr)
    if r.returncode != 0:
        errors.append("promtool check rules failed")
    tests = test_files(root)
    if not tests:
        errors.append("no test files in %s/tests" % PROM_DIR)
    r = run(["promtool", "test", "rules"] + tests)
    print(r.stdout + r.stderr)
    if r.returncode != 0:
        errors.append("promtool test rules failed")
    errors += coverage(root, tests)
    errors += docs_promql(root)
    for e in errors:
        print("FAIL: " + e, file=sys.stderr)
    if not errors:
        rules = rules_of(root)
        print("monitoring rules: %d recording rules and %d alerts checked and tested by %d files"
              % (sum(1 for r in rules if "record" in r[3]), sum(1 for r in rules if "alert" in r[3]),
                 len(tests)))
    return 1 if errors else 0


def coverage(root, tests):
    """Every recording rule is the expr of a promql_expr_test with samples; every alert has an
    alert_rule_test that expects it to fire and one that expects it not to. Every alert has the
    severity label and summary/description annotations that point at the docs."""
    errors = []
    recorded = {}   # name -> number of expr tests with samples
    fired = {}      # alert -> [firing cases, not-firing cases]
    for path in tests:
        doc = load_yaml(path)
        for t in doc.get("tests", []):
            for e in t.get("promql_expr_test", []) or []:
                for name in re.findall(r"sidecrypt:[a-z_]+:[a-z_0-9:]+", e["expr"]):
                    if e.get("exp_samples"):
                        recorded[name] = recorded.get(name, 0) + 1
            for a in t.get("alert_rule_test", []) or []:
                c = fired.setdefault(a["alertname"], [0, 0])
                c[0 if a.get("exp_alerts") else 1] += 1
    for name, _, _, r in rules_of(root):
        if "record" in r:
            if not recorded.get(r["record"]):
                errors.append("%s: recording rule %s has no promql_expr_test with exp_samples"
                              % (name, r["record"]))
            continue
        a = r["alert"]
        c = fired.get(a, [0, 0])
        if not c[0]:
            errors.append("%s: alert %s has no test in which it fires" % (name, a))
        if not c[1]:
            errors.append("%s: alert %s has no test in which it does not fire" % (name, a))
        if r.get("labels", {}).get("severity") not in ("critical", "warning"):
            errors.append("%s: alert %s has no severity critical|warning" % (name, a))
        ann = r.get("annotations", {})
        for k in ("summary", "description"):
            if not ann.get(k):
                errors.append("%s: alert %s has no %s annotation" % (name, a, k))
        if "docs/monitoring.md#" + a.lower() not in ann.get("description", ""):
            errors.append("%s: alert %s: the description does not link docs/monitoring.md#%s"
                          % (name, a, a.lower()))
        if ("#" + a.lower()) not in anchors(root):
            errors.append("docs/monitoring.md has no heading for alert %s" % a)
    known = {r[3].get("alert") for r in rules_of(root)}
    for a in fired:
        if a not in known:
            errors.append("tests name an alert that does not exist: %s" % a)
    return errors


def docs_promql(root):
    """The PromQL that docs/monitoring.md gives (```promql blocks, and `query:` in its YAML) must
    parse and name only exported metrics and recording rules that exist."""
    path = os.path.join(root, "docs", "monitoring.md")
    if not os.path.exists(path):
        return ["docs/monitoring.md is missing"]
    text = open(path, encoding="utf-8").read()
    exprs = re.findall(r"```promql\n(.*?)```", text, re.S)
    for block in re.findall(r"```yaml\n(.*?)```", text, re.S):
        exprs += [q.strip() for q in re.findall(r"^\s*query:\s*(\S.*)$", block, re.M)]
    if len(exprs) < 2:
        return ["docs/monitoring.md: expected the AnalysisTemplate query and a promql block"]
    errors = []
    recorded = {r[3]["record"] for r in rules_of(root) if "record" in r[3]}
    for e in exprs:
        for name in re.findall(r"\b(sidecrypt[_:][a-z_0-9:]*)", e):
            if name not in EXPORTED and name not in recorded:
                errors.append("docs/monitoring.md: %s in %r is neither exported nor recorded"
                              % (name, e))
    tmp = tempfile.mkdtemp(prefix="sc-mon-docs-")
    try:
        rf = os.path.join(tmp, "docs-exprs.yml")
        with open(rf, "w") as f:
            json.dump({"groups": [{"name": "docs", "rules": [
                {"record": "docs:expr_%d:check" % i, "expr": e} for i, e in enumerate(exprs)]}]}, f)
        r = run(["promtool", "check", "rules", rf])
        if r.returncode != 0:
            errors.append("docs/monitoring.md: promtool cannot parse its PromQL:\n"
                          + r.stdout + r.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return errors


def anchors(root):
    path = os.path.join(root, "docs", "monitoring.md")
    out = set()
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                m = re.match(r"#{1,6}\s+(.*)", line)
                if m:
                    slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
                    out.add("#" + slug)
    return out


# ----------------------------------------------------------------------------------------------
# mutations: a broken rule must fail the tests


def mutations(rule):
    """(description, mutated rule) pairs that the tests must catch."""
    out = []
    expr = rule["expr"].strip()
    if "record" in rule:
        m = dict(rule, expr="(%s) + 1" % expr)
        out.append(("value moved by 1", m))
    else:
        out.append(("never fires", dict(rule, expr="(%s) unless on () vector(1)" % expr)))
        out.append(("fires when it should not",
                    dict(rule, expr="(%s) or on () vector(1)" % expr)))
        if rule.get("for"):
            m = dict(rule)
            del m["for"]
            out.append(("fires without waiting for %s" % rule["for"], m))
    return out


def cmd_mutations(root):
    need("promtool")
    src = os.path.join(root, PROM_DIR)
    tests = [os.path.basename(t) for t in test_files(root)]
    texts = {t: open(os.path.join(src, "tests", t), encoding="utf-8").read() for t in tests}
    r = run(["promtool", "test", "rules"] + [os.path.join(src, "tests", t) for t in tests])
    if r.returncode != 0:
        print(r.stdout + r.stderr)
        print("FAIL: the unmutated tests do not pass", file=sys.stderr)
        return 1
    originals = {n: load_yaml(os.path.join(src, n)) for n in RULE_FILES}
    jobs = []
    for name, gi, ri, rule in rules_of(root):
        key = rule.get("record") or rule.get("alert")
        # the test files that name the rule (its own tests)
        relevant = [t for t in tests if re.search(r"\b%s\b" % re.escape(key), texts[t])]
        for what, mutated in mutations(rule):
            jobs.append((name, gi, ri, key, what, mutated, relevant))

    def one(job):
        name, gi, ri, key, what, mutated, relevant = job
        tmp = tempfile.mkdtemp(prefix="sc-mon-mut-")
        try:
            prom = os.path.join(tmp, "prometheus")
            shutil.copytree(src, prom)
            doc = copy.deepcopy(originals[name])
            doc["groups"][gi]["rules"][ri] = mutated
            dump_yaml(doc, os.path.join(prom, name))
            r = run(["promtool", "test", "rules"]
                    + [os.path.join(prom, "tests", t) for t in relevant])
            return r.returncode != 0 and bool(relevant)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=2) as ex:
        results = list(ex.map(one, jobs))
    failures = []
    for (name, gi, ri, key, what, mutated, relevant), caught in zip(jobs, results):
        print("%-8s %s: %s" % ("caught" if caught else "MISSED", key, what))
        if not caught:
            failures.append("%s (%s): %s" % (key, name, what))
    for f in failures:
        print("FAIL: no test catches the broken rule %s" % f, file=sys.stderr)
    if not failures:
        print("monitoring mutations: all %d broken rules caught" % len(jobs))
    return 1 if failures else 0


# ----------------------------------------------------------------------------------------------
# prometheus: the rules loaded into the real thing, scraping two fake sidecrypts


def exposition(node, gossip_stage, rpc_stage, plaintext_peers, t0):
    """A /metrics body in the shape sidecrypt renders (names from docs/monitoring.md)."""
    s = [
        "# HELP sidecrypt_up 1 while the process runs.", "# TYPE sidecrypt_up gauge",
        "sidecrypt_up 1",
        "# HELP sidecrypt_info Version and the agent's node name.", "# TYPE sidecrypt_info gauge",
        'sidecrypt_info{version="0.5.0",node="%s"} 1' % node,
        "# HELP sidecrypt_start_time_seconds Start time.",
        "# TYPE sidecrypt_start_time_seconds gauge", "sidecrypt_start_time_seconds %d" % t0,
        "# HELP sidecrypt_stage Rollout settings in force (1 = on).", "# TYPE sidecrypt_stage gauge",
    ]
    for k, v in (("encrypt_verify_incoming", gossip_stage == 3),
                 ("encrypt_verify_outgoing", gossip_stage >= 2),
                 ("verify_incoming", rpc_stage == 3), ("verify_outgoing", rpc_stage >= 2),
                 ("verify_server_hostname", rpc_stage >= 2)):
        s.append('sidecrypt_stage{setting="%s"} %d' % (k, v))
    s += ["# HELP sidecrypt_rollout_stage Stage per track.",
          "# TYPE sidecrypt_rollout_stage gauge",
          'sidecrypt_rollout_stage{track="gossip"} %d' % gossip_stage,
          'sidecrypt_rollout_stage{track="rpc"} %d' % rpc_stage,
          "# HELP sidecrypt_keyring_keys Keys in each keyring.", "# TYPE sidecrypt_keyring_keys gauge",
          'sidecrypt_keyring_keys{pool="lan"} 1', 'sidecrypt_keyring_keys{pool="wan"} 0',
          "# HELP sidecrypt_keyring_key One per key.", "# TYPE sidecrypt_keyring_key gauge",
          'sidecrypt_keyring_key{pool="lan",fingerprint="1a2b3c4d",primary="true"} 1',
          "# HELP sidecrypt_reload_last_success 1 if the last reload worked.",
          "# TYPE sidecrypt_reload_last_success gauge", "sidecrypt_reload_last_success 1",
          "# HELP sidecrypt_reloads_total Reloads by result.", "# TYPE sidecrypt_reloads_total counter",
          'sidecrypt_reloads_total{result="ok"} 0', 'sidecrypt_reloads_total{result="failed"} 0',
          "# HELP sidecrypt_census_peers Peers in the census.", "# TYPE sidecrypt_census_peers gauge",
          "sidecrypt_census_peers 2",
          "# HELP sidecrypt_census_capacity max_peers.", "# TYPE sidecrypt_census_capacity gauge",
          "sidecrypt_census_capacity 65536",
          "# HELP sidecrypt_census_window_seconds Window.",
          "# TYPE sidecrypt_census_window_seconds gauge", "sidecrypt_census_window_seconds 600",
          "# HELP sidecrypt_census_plaintext_peers Plaintext peers in the window.",
          "# TYPE sidecrypt_census_plaintext_peers gauge",
          "sidecrypt_census_plaintext_peers %d" % plaintext_peers,
          "# HELP sidecrypt_census_refused_peers Refused peers in the window.",
          "# TYPE sidecrypt_census_refused_peers gauge", "sidecrypt_census_refused_peers 0",
          "# HELP sidecrypt_census_silent_members Silent members.",
          "# TYPE sidecrypt_census_silent_members gauge", "sidecrypt_census_silent_members 0",
          "# HELP sidecrypt_census_key_peers Peers per key.",
          "# TYPE sidecrypt_census_key_peers gauge",
          'sidecrypt_census_key_peers{pool="lan",fingerprint="1a2b3c4d"} 1',
          "# HELP sidecrypt_census_dropped_total Dropped records.",
          "# TYPE sidecrypt_census_dropped_total counter", "sidecrypt_census_dropped_total 0",
          "# HELP sidecrypt_check_ok Checks.", "# TYPE sidecrypt_check_ok gauge",
          'sidecrypt_check_ok{check="enforce_incoming"} %d' % (plaintext_peers == 0),
          'sidecrypt_check_ok{check="remove_ca",fingerprint="%s"} 0' % ("ab" * 32),
          "# HELP sidecrypt_tls_peer_ca_peers Peers per CA and direction.",
          "# TYPE sidecrypt_tls_peer_ca_peers gauge",
          'sidecrypt_tls_peer_ca_peers{direction="inbound",ca_fingerprint="%s"} 1' % ("ab" * 32),
          'sidecrypt_tls_peer_ca_peers{direction="outbound",ca_fingerprint="%s"} 0' % ("ab" * 32),
          "# HELP sidecrypt_gossip_members Members by state.",
          "# TYPE sidecrypt_gossip_members gauge",
          'sidecrypt_gossip_members{state="alive"} 2', 'sidecrypt_gossip_members{state="dead"} 0',
          "# HELP sidecrypt_gossip_members_uncovered Uncovered members.",
          "# TYPE sidecrypt_gossip_members_uncovered gauge", "sidecrypt_gossip_members_uncovered 0",
          "# HELP sidecrypt_key_queries_total Key queries.",
          "# TYPE sidecrypt_key_queries_total counter",
          'sidecrypt_key_queries_total{outcome="persist_failed"} 0',
          "# HELP sidecrypt_rpc_total RPC events.", "# TYPE sidecrypt_rpc_total counter"]
    for e in ("passthrough_plaintext", "plaintext_refused", "handshakes_failed"):
        s.append('sidecrypt_rpc_total{event="%s"} 0' % e)
    cert = 'role="leaf",file="/etc/consul/server.pem",subject="CN=server.dc1.consul",serial="0A"'
    s += ["# HELP sidecrypt_tls_certificate_expiry_seconds Seconds until notAfter.",
          "# TYPE sidecrypt_tls_certificate_expiry_seconds gauge",
          "sidecrypt_tls_certificate_expiry_seconds{%s} 31536000" % cert,
          "# HELP sidecrypt_tls_certificate_not_before_seconds notBefore.",
          "# TYPE sidecrypt_tls_certificate_not_before_seconds gauge",
          "sidecrypt_tls_certificate_not_before_seconds{%s} %d" % (cert, t0 - 86400)]
    for fam in ("packets", "streams"):
        s += ["# HELP sidecrypt_gossip_%s_total Gossip by pool, direction, result." % fam,
              "# TYPE sidecrypt_gossip_%s_total counter" % fam]
        for pool in ("lan", "wan"):
            for d in ("agent_to_peer", "peer_to_agent"):
                for res in ("sealed", "plaintext_forwarded", "plaintext_refused", "shadow_refused",
                            "open_failed"):
                    s.append('sidecrypt_gossip_%s_total{pool="%s",direction="%s",result="%s"} 0'
                             % (fam, pool, d, res))
                s.append('sidecrypt_gossip_%s_total{pool="%s",direction="%s",result="opened",'
                         'key_index="0"} 0' % (fam, pool, d))
    return "\n".join(s) + "\n"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(body):
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def api(base, path):
    with urllib.request.urlopen(base + path, timeout=3) as r:
        doc = json.loads(r.read().decode())
    if doc.get("status") != "success":
        raise AssertionError(doc)
    return doc["data"]


def cmd_prometheus(root):
    need("prometheus", "promtool")
    t0 = int(time.time()) - 100
    bodies = [exposition("web-1", 2, 1, 3, t0), exposition("web-2", 3, 3, 0, t0)]
    lint = run(["promtool", "check", "metrics"], input=bodies[0])
    if lint.returncode != 0:
        print("FAIL: the fake exposition does not pass promtool check metrics:\n"
              + lint.stdout + lint.stderr, file=sys.stderr)
        return 1
    servers = [serve(b) for b in bodies]
    tmp = tempfile.mkdtemp(prefix="sc-mon-prom-")
    proc = None
    log_path = os.path.join(tmp, "prometheus.log")
    errors = []
    try:
        cfg = os.path.join(tmp, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("\n".join([
                "global:", "  scrape_interval: 1s", "  scrape_timeout: 1s",
                "  evaluation_interval: 1s",
                "rule_files:"] + ["  - %s" % os.path.join(root, PROM_DIR, n) for n in RULE_FILES] + [
                "scrape_configs:", "  - job_name: sidecrypt", "    static_configs:",
                "      - targets: [%s]" % ", ".join(
                    "'127.0.0.1:%d'" % s.server_address[1] for s in servers), ""]))
        port = free_port()
        base = "http://127.0.0.1:%d" % port
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                ["prometheus", "--config.file=" + cfg, "--storage.tsdb.path=" + os.path.join(tmp, "data"),
                 "--web.listen-address=127.0.0.1:%d" % port, "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, cwd=tmp, start_new_session=True)
        version = run(["prometheus", "--version"]).stdout.splitlines()[0]
        expected = {}
        for name in RULE_FILES:
            for g in load_yaml(os.path.join(root, PROM_DIR, name))["groups"]:
                expected[g["name"]] = len(g["rules"])
        deadline = time.time() + 20
        last = None
        while time.time() < deadline:
            if proc.poll() is not None:
                break
            try:
                groups = api(base, "/api/v1/rules")["groups"]
                nodes = api(base, "/api/v1/query?query=sidecrypt:node:gossip_stage")["result"]
                fleet = api(base, "/api/v1/query?query=sidecrypt:fleet:nodes_up")["result"]
                rates = api(base, "/api/v1/query?query="
                            "sidecrypt:node:gossip_plaintext_accepted:rate5m")["result"]
            except (OSError, ValueError, AssertionError) as e:
                last = repr(e)
                time.sleep(0.3)
                continue
            last = groups
            evaluated = {g["name"]: g for g in groups
                         if not g["lastEvaluation"].startswith("0001-")}
            # rates need two scrapes of each counter before the rules evaluate them
            if set(evaluated) == set(expected) and len(nodes) == 2 and fleet and \
                    fleet[0]["value"][1] == "2" and len(rates) == 2:
                break
            time.sleep(0.3)
        else:
            errors.append("prometheus did not evaluate every group against two scraped targets "
                          "within 20 s; last answer: %s" % json.dumps(last)[:2000])
        if proc.poll() is not None:
            errors.append("prometheus exited with %s" % proc.returncode)
        if not errors:
            got = {g["name"]: g for g in groups}
            for name, n in expected.items():
                g = got.get(name)
                if g is None:
                    errors.append("group %s not loaded" % name)
                    continue
                if len(g["rules"]) != n:
                    errors.append("group %s: %d rules loaded, %d in the file" % (name, len(g["rules"]), n))
                for r in g["rules"]:
                    if r.get("health") != "ok":
                        errors.append("rule %s: health %s: %s" % (r["name"], r.get("health"),
                                                                  r.get("lastError")))
            by_node = {r["metric"].get("node"): r["value"][1] for r in nodes}
            if by_node != {"web-1": "2", "web-2": "3"}:
                errors.append("sidecrypt:node:gossip_stage by node: %r" % by_node)
            if not errors and os.path.exists(os.path.join(root, DASHBOARD)):
                with open(os.path.join(root, DASHBOARD), encoding="utf-8") as f:
                    exprs = dashboard_exprs(json.load(f))
                empty = 0
                for where, e in exprs:
                    q = urllib.parse.quote(grafana_to_promql(e))
                    try:
                        res = api(base, "/api/v1/query?query=" + q)["result"]
                        empty += not res
                        # only a filter (a count or top-k of failing nodes) may answer nothing
                        if not res and "> 0" not in e and "== 0" not in e:
                            errors.append("dashboard %s: %r answers nothing" % (where, e))
                    except (OSError, ValueError, AssertionError) as ex:
                        errors.append("dashboard %s: %r fails in prometheus: %s" % (where, e, ex))
                print("dashboard: %d expressions answered by prometheus (%d empty: counts of "
                      "failing nodes, and nodes with refusals, where there are none)" % (len(exprs), empty))
            if not errors:
                print("%s loaded %s; every group evaluated, all %d rules healthy against two "
                      "scraped targets; sidecrypt:node:gossip_stage = %r"
                      % (version, ", ".join(RULE_FILES), sum(expected.values()), by_node))
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        for s in servers:
            s.shutdown()
            s.server_close()
        if errors and os.path.exists(log_path):
            print("prometheus log:\n" + open(log_path).read()[-4000:], file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)
    for e in errors:
        print("FAIL: " + e, file=sys.stderr)
    return 1 if errors else 0


# ----------------------------------------------------------------------------------------------
# dashboard


def panels_of(dash):
    for p in dash.get("panels", []):
        yield p
        for q in p.get("panels", []) or []:
            yield q


def dashboard_exprs(dash):
    """[(where, expr)] of every panel target and query variable."""
    out = []
    for p in panels_of(dash):
        for t in p.get("targets") or []:
            out.append((p.get("title", "?"), t.get("expr", "")))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            out.append(("variable " + v.get("name", "?"), v.get("definition") or ""))
    return out


def grafana_to_promql(e, job="sidecrypt"):
    q = e.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace(
        "$__range", "1h").replace("${job}", job).replace("$job", job)
    return re.sub(r"label_values\(([^,]*),\s*([a-z_]+)\)", r"\1", q)


def validate_dashboard(dash, root):
    errors = []
    if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 36:
        errors.append("schemaVersion %r (want >= 36)" % dash.get("schemaVersion"))
    for k in ("title", "uid"):
        if not dash.get(k):
            errors.append("no %s" % k)
    tvars = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds = tvars.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        errors.append("no datasource template variable of type datasource/prometheus")
    job = tvars.get("job")
    if not job or (job.get("current") or {}).get("value") != "sidecrypt":
        errors.append("no job template variable defaulting to sidecrypt")
    elif (job.get("datasource") or {}).get("uid") != "${datasource}":
        errors.append("the job variable does not query ${datasource}")
    ids = set()
    n = 0
    for p in panels_of(dash):
        title = p.get("title", "?")
        if p.get("type") == "row":
            continue
        n += 1
        if p.get("id") in ids:
            errors.append("panel %r: duplicate id %r" % (title, p.get("id")))
        ids.add(p.get("id"))
        if not p.get("gridPos"):
            errors.append("panel %r: no gridPos" % title)
        if not p.get("description"):
            errors.append("panel %r: no description" % title)
        if (p.get("datasource") or {}).get("uid") != "${datasource}":
            errors.append("panel %r: datasource is not ${datasource}" % title)
        targets = p.get("targets") or []
        if not targets:
            errors.append("panel %r: no targets" % title)
        for t in targets:
            if (t.get("datasource") or {}).get("uid") != "${datasource}":
                errors.append("panel %r: a target's datasource is not ${datasource}" % title)
            if not t.get("expr"):
                errors.append("panel %r: a target without expr" % title)
    exprs = [(w, e) for w, e in dashboard_exprs(dash) if e]
    recorded = {r[3]["record"] for r in rules_of(root) if "record" in r[3]}
    for where, e in exprs:
        for name, sel in re.findall(r"\b(sidecrypt[_:][a-z_0-9:]*)(\{[^}]*\})?", e):
            if name.startswith("sidecrypt_") and name not in EXPORTED:
                errors.append("%s: %s is not a metric sidecrypt exports" % (where, name))
            elif name.startswith("sidecrypt:") and name not in recorded:
                errors.append("%s: %s is not a recording rule" % (where, name))
            if not where.startswith("variable ") and 'job="$job"' not in sel:
                errors.append("%s: %s without job=\"$job\"" % (where, name))
    # promtool parses every expression (as recording rules in a temporary file), with the
    # Grafana variables replaced by values
    tmp = tempfile.mkdtemp(prefix="sc-mon-dash-")
    try:
        rules = []
        for i, (where, e) in enumerate(exprs):
            q = grafana_to_promql(e)
            if "$" in q:
                errors.append("%s: unknown variable in %r" % (where, e))
                continue
            rules.append({"record": "dashboard:expr_%d:check" % i, "expr": q})
        rf = os.path.join(tmp, "dashboard-exprs.yml")
        with open(rf, "w") as f:
            json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
        r = run(["promtool", "check", "rules", rf])
        if r.returncode != 0:
            errors.append("promtool cannot parse the dashboard's expressions:\n" + r.stdout + r.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return errors, n, len(exprs)


def cmd_dashboard(root):
    need("promtool")
    path = os.path.join(root, DASHBOARD)
    try:
        with open(path, encoding="utf-8") as f:
            dash = json.load(f)
    except (OSError, ValueError) as e:
        print("FAIL: %s: %s" % (path, e), file=sys.stderr)
        return 1
    errors, npanels, nexprs = validate_dashboard(dash, root)
    # the validator itself must reject broken dashboards
    def first_target(d):
        return next(t for p in panels_of(d) for t in (p.get("targets") or []))

    def first_panel(d):
        return next(p for p in panels_of(d) if p.get("type") != "row")
    breakers = {
        "an expression that does not parse": lambda d: first_target(d).update(
            expr=first_target(d)["expr"] + " +"),
        "a metric sidecrypt does not export": lambda d: first_target(d).update(
            expr='sum(sidecrypt_no_such_metric{job="$job"})'),
        "a recording rule that does not exist": lambda d: first_target(d).update(
            expr='sidecrypt:fleet:no_such_rule{job="$job"}'),
        "a selector without the job": lambda d: first_target(d).update(
            expr=first_target(d)["expr"].replace('{job="$job"}', "")),
        "a panel on a fixed datasource": lambda d: first_panel(d).update(
            datasource={"type": "prometheus", "uid": "prom-1"}),
    }
    for what, brk in breakers.items():
        d = copy.deepcopy(dash)
        brk(d)
        if not validate_dashboard(d, root)[0]:
            errors.append("self-test: the validator accepts %s" % what)
    for e in errors:
        print("FAIL: " + e, file=sys.stderr)
    if not errors:
        print("dashboard: %d panels, %d expressions parsed by promtool, every name exported or "
              "recorded, every selector on $job; the validator rejects %d broken copies"
              % (npanels, nexprs, len(breakers)))
    return 1 if errors else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("what", choices=("rules", "mutations", "prometheus", "dashboard"))
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))
    a = ap.parse_args()
    root = os.path.abspath(a.root)
    return {"rules": cmd_rules, "mutations": cmd_mutations, "prometheus": cmd_prometheus,
            "dashboard": cmd_dashboard}[a.what](root)


if __name__ == "__main__":
    sys.exit(main())
