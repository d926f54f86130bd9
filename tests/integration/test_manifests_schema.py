"""Claim: every object in deploy/kubernetes/*.yaml is valid against the Kubernetes API's OpenAPI
schemas (types, enums, required fields; native sidecars' restartPolicy included), offline: kubectl
cannot validate without a cluster (`kubectl apply --dry-run=client --validate` downloads the
schema from the API server, `kubectl create --dry-run=client` needs discovery), so the schemas
come from the npm package kubernetes-models (tests/manifests, installed by
scripts/install-deps.sh). A deliberately broken copy is rejected, so the validator is live.
"""
import glob
import os
import shutil
import subprocess
import unittest

import harness

HERE = os.path.join(harness.REPO_ROOT, "tests", "manifests")
MANIFESTS = sorted(glob.glob(os.path.join(harness.REPO_ROOT, "deploy", "kubernetes", "*.yaml")))


class ManifestSchema(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.require_commands("node", why="schema validation (Debian: nodejs)")
        if not os.path.isdir(os.path.join(HERE, "node_modules", "kubernetes-models")):
            harness.skip_or_fail("tests/manifests/node_modules is missing: run "
                                 "scripts/install-deps.sh (npm ci --prefix tests/manifests)")

    def validate(self, *files):
        return subprocess.run(["node", os.path.join(HERE, "validate.mjs")] + list(files),
                              capture_output=True, text=True, timeout=120)

    def test_manifests_valid(self):
        self.assertTrue(MANIFESTS)
        r = self.validate(*MANIFESTS)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("ok DaemonSet/consul-client", r.stdout)
        self.assertRegex(r.stdout, r"\n3 valid, 0 invalid\n")

    def test_broken_copy_rejected(self):
        w = harness.Workdir()
        self.addCleanup(w.cleanup)
        with open(MANIFESTS[0]) as f:
            text = f.read()
        for old, new, why in (("periodSeconds: 1\n", 'periodSeconds: "one"\n', "must be integer"),
                              ("  restartPolicy: Always\n", "  restartPolicy: [Always]\n",
                               "restartPolicy must be string"),
                              ("  - name: consul\n", "  - nam: consul\n", "name"),
                              ("containerPort: 9921\n", 'containerPort: "9921"\n',
                               "must be integer")):
            self.assertIn(old, text)
            bad = w.file("bad.yaml", text.replace(old, new, 1))
            r = self.validate(bad)
            self.assertEqual(r.returncode, 1, "%s accepted:\n%s" % (new, r.stdout))
            self.assertIn("invalid DaemonSet/consul-client", r.stdout)
            self.assertIn(why, r.stdout)


if __name__ == "__main__":
    harness.main()
