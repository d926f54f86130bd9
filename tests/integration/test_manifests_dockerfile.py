"""Claim: docker/Dockerfile builds from what its build context holds and runs what sidecrypt
needs, checked without a container engine (none runs on these machines): it is multi-stage, the
runtime stage is debian:bookworm-slim and runs as a non-root numeric user; the build stage's
-dev packages are the libraries scripts/install-deps.sh builds with; every shared library the
built binary loads belongs to a package the runtime stage installs (or to one of their
dependencies); the tools the rules step, /ready and doctor run are installed; CAP_NET_RAW is a
permitted-only file capability (so the image also runs the root, NET_ADMIN-only rules step);
and the sources the build stage copies (after .dockerignore) configure with CMake on their own.
"""
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import harness

ROOT = harness.REPO_ROOT


def dockerfile_stages():
    with open(os.path.join(ROOT, "docker", "Dockerfile")) as f:
        text = f.read()
    text = re.sub(r"\\\n", " ", text)
    stages = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, rest = line.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            stages.append({"from": rest.strip(), "lines": []})
        elif stages:
            stages[-1]["lines"].append((instr, " ".join(rest.split())))
    return stages


def apt_installed(stage):
    pkgs = []
    for instr, rest in stage["lines"]:
        if instr != "RUN":
            continue
        for m in re.finditer(r"apt-get install ((?:-\S+\s+)*)([^&]+)", rest):
            pkgs += [p for p in m.group(2).split() if not p.startswith("-")]
    return pkgs


def owner(path):
    for p in (path, re.sub(r"^/usr/lib/", "/lib/", path), re.sub(r"^/lib/", "/usr/lib/", path)):
        r = subprocess.run(["dpkg", "-S", p], capture_output=True, text=True)
        if r.returncode == 0:
            return r.stdout.split(":")[0].strip()
    return None


class Dockerfile(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.require_commands("dpkg", "apt-cache", "ldd", "cmake", why="package checks")
        cls.stages = dockerfile_stages()
        cls.build, cls.runtime = cls.stages[0], cls.stages[-1]

    def test_stages_and_user(self):
        self.assertGreaterEqual(len(self.stages), 2, "multi-stage")
        self.assertTrue(self.build["from"].startswith("debian:bookworm"), self.build["from"])
        self.assertEqual(self.runtime["from"], "debian:bookworm-slim")
        users = [rest for instr, rest in self.runtime["lines"] if instr == "USER"]
        self.assertEqual(len(users), 1)
        uid, _, gid = users[0].partition(":")
        self.assertTrue(uid.isdigit() and int(uid) != 0, "numeric non-root uid (runAsNonRoot)")
        self.assertTrue(gid.isdigit() and int(gid) != 0)
        self.assertIn(("COPY", "--from=build /usr/bin/sidecrypt /usr/bin/sidecrypt"),
                      self.runtime["lines"])
        entry = [rest for instr, rest in self.runtime["lines"] if instr == "ENTRYPOINT"]
        self.assertEqual(entry, ['["/usr/bin/sidecrypt"]'])

    def test_build_packages_match_install_deps(self):
        with open(os.path.join(ROOT, "scripts", "install-deps.sh")) as f:
            deps = f.read()
        # The lines after "# libraries on the design card..." up to the next comment.
        block = deps.split("# libraries on the design card")[1].split("\n")[1:]
        libs = []
        for line in block:
            if line.strip().startswith("#") or line.strip() == ")":
                break
            libs += line.split()
        wanted = set(libs) | {"build-essential", "cmake", "ninja-build", "pkg-config"}
        self.assertEqual(set(apt_installed(self.build)), wanted)

    def test_runtime_packages_cover_linked_libraries(self):
        runtime = apt_installed(self.runtime)
        r = subprocess.run(["apt-cache", "depends", "--recurse", "--installed", "--no-recommends",
                            "--no-suggests", "--no-conflicts", "--no-breaks", "--no-replaces",
                            "--no-enhances"] + [p for p in runtime if p != "libcap2-bin"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        closure = {l.strip() for l in r.stdout.splitlines() if not l.startswith(" ")}
        ldd = subprocess.run(["ldd", harness.binary()], capture_output=True, text=True,
                             check=True).stdout
        self.assertNotIn("not found", ldd)
        missing = []
        for line in ldd.splitlines():
            m = re.search(r"=> (/\S+)", line)
            if not m:
                continue
            pkg = owner(os.path.realpath(m.group(1)))
            self.assertIsNotNone(pkg, "no package owns " + m.group(1))
            if pkg not in closure:
                missing.append("%s (%s)" % (pkg, m.group(1)))
        self.assertEqual(missing, [], "runtime stage lacks packages for linked libraries")
        for tool_pkg in ("nftables", "iptables", "iproute2"):
            self.assertIn(tool_pkg, runtime)

    def test_file_capability_permitted_only(self):
        runs = " ".join(rest for instr, rest in self.runtime["lines"] if instr == "RUN")
        self.assertIn("setcap cap_net_raw+p /usr/bin/sidecrypt", runs)
        self.assertNotIn("+ep", runs, "an effective-bit file capability would stop the "
                                      "NET_ADMIN-only rules step from executing the binary")

    def test_rules_and_ready_tools_stay_in_the_image(self):
        # iproute2 depends on libcap2-bin (setcap's package): purging that after setcap took
        # `ip` with it, so the rules step failed and /ready stayed 503. Nothing the runtime
        # stage installed may be removed again, and the last RUN proves the tools still execute.
        runs = [rest for instr, rest in self.runtime["lines"] if instr == "RUN"]
        for run in runs:
            self.assertNotRegex(run, r"apt-get\s+(\S+\s+)*(purge|remove|autoremove)\b", run)
            self.assertNotRegex(run, r"\bdpkg\s+(-r|-P|--remove|--purge)\b", run)
        last = runs[-1]
        for probe in ("ip -V", "nft --version", "iptables --version",
                      "iptables-legacy --version"):
            self.assertIn(probe, last, "the image must prove `%s` runs" % probe)
        self.assertLess(last.index("setcap"), last.index("ip -V"))

    def test_build_context_configures(self):
        with open(os.path.join(ROOT, ".dockerignore")) as f:
            allowed = [l.strip()[1:].rstrip("/") for l in f
                       if l.strip().startswith("!")]
        copies = [rest.split()[0].rstrip("/") for instr, rest in self.build["lines"]
                  if instr == "COPY"]
        self.assertEqual(sorted(c for c in copies if c != "."), sorted(allowed))
        tmp = tempfile.mkdtemp(prefix="sidecrypt-ctx-")
        self.addCleanup(shutil.rmtree, tmp, True)
        for item in allowed:
            src = os.path.join(ROOT, item)
            if os.path.isdir(src):
                shutil.copytree(src, os.path.join(tmp, item))
            else:
                shutil.copy(src, tmp)
        gen = ["-G", "Ninja"] if shutil.which("ninja") else []
        r = subprocess.run(["cmake", "-S", tmp, "-B", os.path.join(tmp, "b")] + gen +
                           ["-DCMAKE_BUILD_TYPE=RelWithDebInfo", "-DSIDECRYPT_TESTS=OFF"],
                           capture_output=True, text=True, timeout=240)
        self.assertEqual(r.returncode, 0, r.stdout[-3000:] + r.stderr[-3000:])


if __name__ == "__main__":
    harness.main()
