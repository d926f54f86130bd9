"""Claim (issue 19, item 1): the expiry of every certificate sidecrypt loads is visible and
alertable, and stays right after the certificate has expired (Envoy's metric did not).

A CA and a leaf made to expire a few seconds after sidecrypt starts (python3-cryptography):

  * /metrics: sidecrypt_tls_certificate_expiry_seconds{role="leaf",...} is positive at first,
    then negative after notAfter, with no reload in between (computed at each scrape); the CA's
    series is there too, and sidecrypt_tls_certificate_not_before_seconds is the leaf's notBefore;
  * the log warns when the leaf is within a day of expiry (at start) and when it has expired
    (the expiry timer fires on the threshold, not an hour later);
  * `sidecrypt status --json` lists the leaf with state "expired", and the text status shows it;
  * a renewed leaf written in place and reloaded replaces the old series (positive again) and is
    warned about afresh;
  * `sidecrypt doctor --only tls` fails on the expired leaf (tls.validity), on a leaf from a
    foreign CA (tls.chain) and on a leaf that is not valid yet, and passes on a good set.
"""
import datetime
import json
import os
import re
import subprocess
import time
import unittest

import harness
from admin_http import SidecryptInNetns

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
except ImportError:  # pragma: no cover
    x509 = None

ADMIN = "127.0.0.1:9920"
LEAF_LIFETIME_S = 8  # long enough to scrape it once before it expires, even on a loaded machine
UTC = datetime.timezone.utc


def now():
    return datetime.datetime.now(UTC).replace(microsecond=0)


def make_ca(cn):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now() - datetime.timedelta(days=1))
            .not_valid_after(now() + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def make_leaf(ca, not_before, not_after, cn="server.dc1.consul"):
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn), x509.DNSName("localhost")]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert, key


def pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def serial_hex(cert):
    """As `openssl x509 -serial` prints it: upper-case hex of whole bytes (a leading 0 kept)."""
    h = "%X" % cert.serial_number
    return "0" + h if len(h) % 2 else h


class CertExpiry(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.require_root("sidecrypt runs in a network namespace of its own")
        if x509 is None:
            harness.skip_or_fail("needs python3-cryptography (scripts/install-deps.sh)")

    def setUp(self):
        self.w = harness.Workdir()
        self.addCleanup(self.w.cleanup)
        self.ca = make_ca("sidecrypt test CA")
        self.ca_file = self.w.file("ca.pem", pem(self.ca[0]), 0o644)

    def config(self, name, leaf):
        """A server config with an inbound explicit listener and this leaf; returns its path."""
        cert_file = self.w.file(name + "-cert.pem", pem(leaf[0]), 0o644)
        key_file = self.w.file(name + "-key.pem", key_pem(leaf[1]))
        text = harness.rpc_proxy_toml(
            data_dir=os.path.join(self.w.path, "d-" + name), server=True, log_level="info",
            listeners=[{"listen": "127.0.0.1:18443", "upstream": "127.0.0.1:8300",
                        "direction": "inbound"}],
            tls={"ca_file": self.ca_file, "cert_file": cert_file, "key_file": key_file,
                 "verify_incoming": True, "verify_outgoing": True})
        text += '\n[admin]\nlisten = "%s"\n' % ADMIN
        return self.w.file(name + ".toml", text, 0o644), cert_file

    def doctor(self, cfg):
        r = harness.run(["doctor", "--config", cfg, "--only", "tls", "--json"], timeout=60)
        doc = json.loads(r.stdout)
        return r.returncode, {c["name"]: c for c in doc["checks"]}, r.stdout

    def test_expiry_is_live_warned_listed_and_failed(self):
        start = now()
        leaf = make_leaf(self.ca, start - datetime.timedelta(minutes=1),
                         start + datetime.timedelta(seconds=LEAF_LIFETIME_S))
        not_after = start.timestamp() + LEAF_LIFETIME_S
        cfg, cert_file = self.config("expiring", leaf)
        sc = SidecryptInNetns("ce", self.w)
        self.addCleanup(sc.stop)
        with open(cfg) as src, open(sc.config, "w") as f:
            f.write(src.read())
        sc.start(ADMIN)
        labels = 'role="leaf",file="%s",subject="CN=server.dc1.consul",serial="%s"' % (
            cert_file, serial_hex(leaf[0]))
        series = re.compile(r"^sidecrypt_tls_certificate_expiry_seconds\{%s\} (-?\d+)$"
                            % re.escape(labels), re.M)

        def expiry():
            status, body = sc.request(ADMIN, "GET", "/metrics")
            self.assertEqual(status, 200)
            m = series.search(body)
            self.assertIsNotNone(m, "no leaf expiry series in /metrics:\n" + body)
            return int(m.group(1)), body

        first, body = expiry()
        if time.time() >= not_after:
            self.fail("sidecrypt took longer than the leaf's %d s lifetime to answer" %
                      LEAF_LIFETIME_S)
        self.assertGreater(first, 0)
        self.assertLessEqual(first, LEAF_LIFETIME_S)
        self.assertIn('sidecrypt_tls_certificate_not_before_seconds{%s} %d\n'
                      % (labels, int(start.timestamp()) - 60), body)
        self.assertRegex(body, r'sidecrypt_tls_certificate_expiry_seconds\{role="ca",file="%s",'
                         r'subject="CN=sidecrypt test CA",serial="%s"\} \d+\n'
                         % (re.escape(self.ca_file), serial_hex(self.ca[0])))
        # Within a day of notAfter already at start: the 1-day warning, once.
        harness.wait_for(lambda: "expires within 1 day" in sc.output(), 10,
                         what="the 1-day warning")
        # Past notAfter, with no reload: the same series goes negative and the log says so.
        harness.wait_for(lambda: time.time() > not_after + 2, LEAF_LIFETIME_S + 5,
                         what="the leaf's notAfter")
        later, _ = expiry()
        self.assertLess(later, 0)
        harness.wait_for(lambda: "EXPIRED at" in sc.output(), 5, what="the expired warning")
        log = sc.output()
        self.assertEqual(log.count("expires within 1 day"), 1, log)
        self.assertEqual(log.count("EXPIRED at"), 1, log)
        self.assertIn("leaf certificate CN=server.dc1.consul (serial %s) in %s EXPIRED"
                      % (serial_hex(leaf[0]), cert_file), log)
        time.sleep(1.5)
        self.assertLess(expiry()[0], later)  # still moving: never a frozen value
        # status --json and the text table
        with sc.ns:
            r = harness.run(["status", "--admin", ADMIN, "--json"])
            text = harness.run(["status", "--admin", ADMIN])
        self.assertEqual(r.returncode, 0, r.stderr)
        certs = json.loads(r.stdout)["status"]["certificates"]
        leafs = [c for c in certs if c["role"] == "leaf"]
        self.assertEqual(len(leafs), 1, certs)
        self.assertEqual(leafs[0]["state"], "expired")
        self.assertEqual(leafs[0]["file"], cert_file)
        self.assertEqual(leafs[0]["serial"], serial_hex(leaf[0]))
        self.assertLess(leafs[0]["seconds_left"], 0)
        self.assertEqual(leafs[0]["chains_to"],
                         self.ca[0].fingerprint(hashes.SHA256()).hex())
        self.assertEqual([c["state"] for c in certs if c["role"] == "ca"], ["ok"])
        self.assertEqual(text.returncode, 0, text.stderr)
        self.assertRegex(text.stdout, r"leaf +expired +\S+ +0 +CN=server\.dc1\.consul")
        # doctor reads the files itself: the expired leaf fails tls.validity
        rc, checks, out = self.doctor(cfg)
        self.assertEqual(rc, 1, out)
        self.assertEqual(checks["tls.validity"]["status"], "fail", out)
        self.assertIn("EXPIRED", checks["tls.validity"]["detail"])
        self.assertEqual(checks["tls.chain"]["status"], "ok", out)
        # A renewed leaf written in place and reloaded: its series replaces the old one (the
        # serial differs), positive again; the log warns about the new one afresh, not the old.
        renewed = make_leaf(self.ca, now() - datetime.timedelta(minutes=1),
                            now() + datetime.timedelta(days=3))
        with open(cert_file + ".tmp", "w") as f:
            f.write(pem(renewed[0]))
        os.replace(cert_file + ".tmp", cert_file)
        key_file = cert_file.replace("-cert.pem", "-key.pem")
        with open(key_file + ".tmp", "w") as f:
            f.write(key_pem(renewed[1]))
        os.chmod(key_file + ".tmp", 0o600)
        os.replace(key_file + ".tmp", key_file)
        with sc.ns:
            r = harness.run(["reload", "--admin", ADMIN], timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        _, body = sc.request(ADMIN, "GET", "/metrics")
        self.assertNotIn(serial_hex(leaf[0]), body)
        m = re.search(r'^sidecrypt_tls_certificate_expiry_seconds\{role="leaf",file="%s",'
                      r'subject="CN=server\.dc1\.consul",serial="%s"\} (\d+)$'
                      % (re.escape(cert_file), serial_hex(renewed[0])), body, re.M)
        self.assertIsNotNone(m, body)
        self.assertGreater(int(m.group(1)), 2 * 86400)
        harness.wait_for(lambda: "(serial %s) in %s expires within 7 days" % (
            serial_hex(renewed[0]), cert_file) in sc.output(), 5, what="the renewed leaf's warning")
        self.assertEqual(sc.output().count("EXPIRED at"), 1)

    def test_doctor_passes_a_good_set_and_fails_foreign_and_future_leafs(self):
        good = make_leaf(self.ca, now() - datetime.timedelta(days=1),
                         now() + datetime.timedelta(days=90))
        cfg, _ = self.config("good", good)
        rc, checks, out = self.doctor(cfg)
        self.assertEqual(rc, 0, out)
        self.assertEqual(checks["tls.validity"]["status"], "ok", out)
        self.assertEqual(checks["tls.chain"]["status"], "ok", out)
        self.assertIn("chains to the CA CN=sidecrypt test CA", checks["tls.chain"]["detail"])

        foreign = make_leaf(make_ca("a foreign CA"), now() - datetime.timedelta(days=1),
                            now() + datetime.timedelta(days=90))
        cfg, cert_file = self.config("foreign", foreign)
        rc, checks, out = self.doctor(cfg)
        self.assertEqual(rc, 1, out)
        self.assertEqual(checks["tls.validity"]["status"], "ok", out)
        self.assertEqual(checks["tls.chain"]["status"], "fail", out)
        self.assertIn(cert_file, checks["tls.chain"]["detail"])
        self.assertIn("does not chain to the CAs of ca_file " + self.ca_file,
                      checks["tls.chain"]["detail"])

        future = make_leaf(self.ca, now() + datetime.timedelta(days=2),
                           now() + datetime.timedelta(days=90))
        cfg, _ = self.config("future", future)
        rc, checks, out = self.doctor(cfg)
        self.assertEqual(rc, 1, out)
        self.assertEqual(checks["tls.validity"]["status"], "fail", out)
        self.assertIn("NOT VALID YET", checks["tls.validity"]["detail"])
        # The text output names the check and prints the fix.
        r = harness.run(["doctor", "--config", cfg, "--only", "tls"], timeout=60)
        self.assertEqual(r.returncode, 1)
        self.assertIn("[ FAIL ] tls.validity:", r.stdout)
        self.assertIn("fix: issue new certificates", r.stdout)


if __name__ == "__main__":
    harness.main()
