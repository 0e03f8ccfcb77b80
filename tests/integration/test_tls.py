"""HTTPS with --ssl-key-file / --ssl-cert-file, with a self-signed certificate made here."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import requests

from tests.conftest import ServerProcess

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")]


def make_pair(folder, name):
    key, cert = folder / f"{name}-key.pem", folder / f"{name}-cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return str(key), str(cert)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return make_pair(tmp_path_factory.mktemp("tls"), "server")


@pytest.fixture(scope="module")
def https(pair):
    key, cert = pair
    srv = ServerProcess(("-t", "1", "-np", "1", "-c", "256", "--ssl-key-file", key, "--ssl-cert-file", cert),
                        log_name="tls", scheme="https", verify=cert)
    try:
        yield srv.wait_ready()
    finally:
        srv.stop()


def test_the_api_is_served_over_https(https):
    assert https.url.startswith("https://")
    assert https.get("/health").json()["status"] == "ok"
    r = https.post("/completion", json={"prompt": "Hello", "n_predict": 4, "temperature": 0})
    assert r.status_code == 200 and r.json()["tokens_predicted"] == 4


def test_streaming_works_over_https(https):
    with requests.post(https.url + "/completion", stream=True, timeout=60, verify=https.verify,
                       json={"prompt": "Hello", "n_predict": 4, "stream": True}) as r:
        frames = [line for line in r.iter_lines() if line.startswith(b"data: ")]
    assert frames and b'"stop":true' in frames[-1]


def test_a_client_that_does_not_trust_the_certificate_is_refused(https):
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(https.url + "/health", timeout=10)


def test_plain_http_to_the_tls_port_gets_no_answer_and_the_server_goes_on(https):
    with pytest.raises(requests.RequestException):
        requests.get(https.url.replace("https://", "http://") + "/health", timeout=10)
    assert https.get("/health").status_code == 200


@pytest.mark.parametrize("which", ["key-only", "cert-only", "missing-file", "mismatched-pair", "not-pem"])
def test_a_bad_tls_setup_stops_startup_with_one_line(pair, tmp_path, which):
    key, cert = pair
    other_key, _ = make_pair(tmp_path, "other")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    args = {"key-only": ["--ssl-key-file", key],
            "cert-only": ["--ssl-cert-file", cert],
            "missing-file": ["--ssl-key-file", key, "--ssl-cert-file", str(tmp_path / "none.pem")],
            "mismatched-pair": ["--ssl-key-file", other_key, "--ssl-cert-file", cert],
            "not-pem": ["--ssl-key-file", key, "--ssl-cert-file", str(junk)]}[which]
    proc = subprocess.run([sys.executable, "-m", "webapp.cli", "--port", "0", *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "TLS" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr and "listening" not in proc.stderr
