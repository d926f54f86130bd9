"""Claim: deploy/kubernetes/consul-client.yaml is consul-k8s's legacy client DaemonSet with
sidecrypt added the way the deployment rules require, checked field by field (python3-yaml; no
cluster is needed or used): a root init container with only NET_ADMIN installs the rules first;
sidecrypt is a native sidecar (init container with restartPolicy: Always) after it, non-root
with only NET_RAW, no privilege escalation, read-only root, and a startup probe that asks /ready;
the agent stays plaintext and leaves on terminate; the config and certificates come from Secrets
whose files sidecrypt's group can read; every exec'd sidecrypt command line parses and does what
the manifest says with the built binary; and deploy/kubernetes/proxy.toml, with a key added, is
a valid configuration that matches the mounts. Needs no root.
"""
import os
import re
import shlex
import subprocess
import unittest

import harness

try:
    import yaml
except ImportError:  # python3-yaml (scripts/install-deps.sh)
    harness.skip_or_fail("needs python3-yaml")

DEPLOY = os.path.join(harness.REPO_ROOT, "deploy", "kubernetes")


def load_all(name):
    with open(os.path.join(DEPLOY, name)) as f:
        return [d for d in yaml.safe_load_all(f) if d]


class KubernetesManifests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.docs = load_all("consul-client.yaml")
        cls.kinds = {(d["kind"], d["metadata"]["name"]): d for d in cls.docs}
        cls.ds = cls.kinds[("DaemonSet", "consul-client")]
        cls.pod = cls.ds["spec"]["template"]["spec"]
        cls.inits = {c["name"]: c for c in cls.pod["initContainers"]}
        cls.containers = {c["name"]: c for c in cls.pod["containers"]}

    def setUp(self):
        self.w = harness.Workdir()
        self.addCleanup(self.w.cleanup)

    def test_legacy_consul_client_shape(self):
        self.assertEqual(self.ds["apiVersion"], "apps/v1")
        for d in self.docs:
            self.assertEqual(d["metadata"]["namespace"], "consul")
        self.assertIn(("ServiceAccount", "consul-client"), self.kinds)
        self.assertIn(("ConfigMap", "consul-client-config"), self.kinds)
        labels = self.ds["spec"]["template"]["metadata"]["labels"]
        for k, v in self.ds["spec"]["selector"]["matchLabels"].items():
            self.assertEqual(labels.get(k), v, "selector must match the template")
        self.assertEqual(labels["component"], "client")
        self.assertEqual(self.pod["serviceAccountName"], "consul-client")
        self.assertFalse(self.pod.get("hostNetwork", False),
                         "the rules belong in the pod's own network namespace")
        agent = self.containers["consul"]
        script = " ".join(agent["command"])
        self.assertIn("consul agent", script)
        self.assertIn("leave_on_terminate = true", script)
        self.assertNotIn("encrypt", script, "the agent stays plaintext; sidecrypt encrypts")
        ports = {(p["containerPort"], p.get("protocol", "TCP")) for p in agent["ports"]}
        self.assertTrue({(8301, "TCP"), (8301, "UDP")} <= ports)

    def test_rules_init_container(self):
        names = [c["name"] for c in self.pod["initContainers"]]
        self.assertEqual(names[:2], ["sidecrypt-rules", "sidecrypt"],
                         "rules first, then the sidecar, both before the agent")
        rules = self.inits["sidecrypt-rules"]
        self.assertNotIn("restartPolicy", rules, "a run-to-completion init container")
        self.assertEqual(rules["command"], ["/usr/bin/sidecrypt", "rules", "install", "--config",
                                            "/etc/sidecrypt/proxy.toml"])
        sc = rules["securityContext"]
        self.assertEqual(sc["capabilities"], {"drop": ["ALL"], "add": ["NET_ADMIN"]})
        self.assertEqual(sc["runAsUser"], 0)
        self.assertIs(sc["allowPrivilegeEscalation"], False)
        self.assertIs(sc["readOnlyRootFilesystem"], True)
        self.assertNotIn("privileged", sc)

    def test_native_sidecar(self):
        sc_ = self.inits["sidecrypt"]
        self.assertEqual(sc_["restartPolicy"], "Always")
        self.assertEqual(sc_["image"], self.inits["sidecrypt-rules"]["image"])
        self.assertEqual(sc_["args"], ["run", "--config", "/etc/sidecrypt/proxy.toml"])
        probe = sc_["startupProbe"]
        self.assertEqual(probe["exec"]["command"],
                         ["/usr/bin/sidecrypt", "doctor", "--config", "/etc/sidecrypt/proxy.toml",
                          "--only", "admin.ready"])
        self.assertGreaterEqual(probe["periodSeconds"] * probe["failureThreshold"], 30)
        sc = sc_["securityContext"]
        self.assertEqual(sc["capabilities"], {"drop": ["ALL"], "add": ["NET_RAW"]})
        self.assertEqual(sc["runAsUser"], 1337)
        self.assertIs(sc["runAsNonRoot"], True)
        self.assertIs(sc["allowPrivilegeEscalation"], False)
        self.assertIs(sc["readOnlyRootFilesystem"], True)
        self.assertEqual(self.pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault")
        # Drain and the agent's leave fit in the grace period.
        self.assertGreaterEqual(self.pod["terminationGracePeriodSeconds"], 10)

    def test_secrets_and_mounts(self):
        vols = {v["name"]: v for v in self.pod["volumes"]}
        self.assertEqual(vols["sidecrypt-config"]["secret"]["secretName"], "sidecrypt-config")
        self.assertEqual(vols["sidecrypt-tls"]["secret"]["secretName"], "sidecrypt-tls")
        for name in ("sidecrypt-config", "sidecrypt-tls"):
            mode = vols[name]["secret"]["defaultMode"]
            self.assertEqual(mode, 0o440, "owner and sidecrypt's group only (fsGroup)")
        self.assertEqual(self.pod["securityContext"]["fsGroup"],
                         self.inits["sidecrypt"]["securityContext"]["runAsGroup"])
        self.assertIn("emptyDir", vols["sidecrypt-data"])
        mounts = {m["mountPath"]: m for m in self.inits["sidecrypt"]["volumeMounts"]}
        self.assertEqual(mounts["/etc/sidecrypt"]["name"], "sidecrypt-config")
        self.assertTrue(mounts["/etc/sidecrypt"]["readOnly"])
        self.assertEqual(mounts["/var/lib/sidecrypt"]["name"], "sidecrypt-data")
        tls = [p for p, m in mounts.items() if m["name"] == "sidecrypt-tls"][0]
        self.assertFalse(tls.startswith("/etc/sidecrypt/"),
                         "no mount inside the read-only Secret mount")
        rules_mounts = {m["mountPath"]: m["name"]
                        for m in self.inits["sidecrypt-rules"]["volumeMounts"]}
        self.assertEqual(rules_mounts, {"/etc/sidecrypt": "sidecrypt-config"})
        # The config the Secret holds matches these paths.
        with open(os.path.join(DEPLOY, "proxy.toml")) as f:
            toml_text = f.read()
        self.assertIn('data_dir = "/var/lib/sidecrypt"', toml_text)
        self.assertIn("install_rules = false", toml_text)
        self.assertIn('listen = "127.0.0.1:9920"', toml_text)
        for line in toml_text.splitlines():
            if line.lstrip("# ").startswith(("ca_file", "cert_file", "key_file")):
                self.assertIn('"%s/' % tls, line)

    def test_config_and_command_lines_run(self):
        """The shipped proxy.toml (plus a key) is valid, and every sidecrypt command line in
        the manifest parses and runs with the built binary (pointed at that config)."""
        key = harness.run(["keygen"], check=True).stdout.strip()
        with open(os.path.join(DEPLOY, "proxy.toml")) as f:
            text = f.read().replace('# encrypt = "<output of sidecrypt keygen>"',
                                    'encrypt = "%s"' % key)
        text = text.replace('data_dir = "/var/lib/sidecrypt"',
                            'data_dir = "%s"' % os.path.join(self.w.path, "data"))
        text = text.replace('listen = "127.0.0.1:9920"', 'listen = "127.0.0.1:1"')
        cfg = self.w.file("proxy.toml", text)
        r = harness.run(["check-config", cfg])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("intercept serf_lan: port 8301", r.stdout)

        def argv(cmd):
            self.assertEqual(cmd[0], "/usr/bin/sidecrypt")
            return [a.replace("/etc/sidecrypt/proxy.toml", cfg) for a in cmd[1:]]

        # The probe: no sidecrypt listens on 127.0.0.1:1, so it must fail, naming /ready.
        probe = argv(self.inits["sidecrypt"]["startupProbe"]["exec"]["command"])
        r = harness.run(probe)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("[ FAIL ] admin.ready", r.stdout)
        self.assertEqual(r.stdout.count("[ FAIL ]"), 1, "only /ready is checked:\n" + r.stdout)
        # The rules command line, as `rules print` (changes nothing).
        rules = argv(self.inits["sidecrypt-rules"]["command"])
        self.assertEqual(rules[:2], ["rules", "install"])
        r = harness.run(["rules", "print"] + rules[2:])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("8301", r.stdout)
        # The sidecar's args parse (`--help` after them: CLI11 validates the options first).
        r = harness.run(argv(["/usr/bin/sidecrypt"] + self.inits["sidecrypt"]["args"]) +
                        ["--help"])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_metrics_scrape_wiring(self):
        """A cluster Prometheus finds the read-only metrics listener: the scrape annotations and
        the sidecar's port named "metrics" name the port proxy.toml's [metrics] listen binds on
        every pod address; the admin endpoint is not what they point at."""
        with open(os.path.join(DEPLOY, "proxy.toml")) as f:
            text = f.read()
        metrics = re.search(r'^\[metrics\]\n(?:#.*\n)*listen = "([^"]+)"$', text, re.M)
        self.assertIsNotNone(metrics, "proxy.toml needs [metrics] listen")
        host, port = metrics.group(1).rsplit(":", 1)
        self.assertEqual(host, "0.0.0.0", "reachable on the pod IP")
        self.assertIn('listen = "127.0.0.1:9920"', text, "the admin endpoint stays on loopback")
        ann = self.ds["spec"]["template"]["metadata"]["annotations"]
        self.assertEqual(ann["prometheus.io/scrape"], "true")
        self.assertEqual(ann["prometheus.io/port"], port)
        self.assertEqual(ann["prometheus.io/path"], "/metrics")
        ports = {p["name"]: p for p in self.inits["sidecrypt"].get("ports", [])}
        self.assertEqual(ports["metrics"]["containerPort"], int(port))
        self.assertEqual(ports["metrics"].get("protocol", "TCP"), "TCP")
        self.assertNotEqual(int(port), 9920)
        agent_ports = {p["containerPort"] for p in self.containers["consul"]["ports"]}
        self.assertNotIn(int(port), agent_ports)
        # The shipped config with that listener passes check-config.
        key = harness.run(["keygen"], check=True).stdout.strip()
        cfg = self.w.file("proxy.toml", text.replace(
            '# encrypt = "<output of sidecrypt keygen>"', 'encrypt = "%s"' % key).replace(
            'data_dir = "/var/lib/sidecrypt"',
            'data_dir = "%s"' % os.path.join(self.w.path, "data")))
        r = harness.run(["check-config", cfg])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_agent_script_is_shell(self):
        script = self.containers["consul"]["command"][2]
        r = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(shlex.split(script.replace("\\\n", " ")))


if __name__ == "__main__":
    harness.main()
