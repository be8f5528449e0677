"""A DICOMweb study PACS behind TLS (docs/deployment.md): a certificate the client does not trust is said as such.

The server is a small HTTPS server on 127.0.0.1 with a self-signed certificate made by the openssl
command (Debian's openssl); it answers a QIDO-RS search with no study.
"""

from __future__ import annotations

import http.server
import shutil
import ssl
import subprocess
import threading

import pytest

from cno_annotate.cli import main


class _NoStudies(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the standard library's name)
        body = b"[]"
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def tls_server(tmp_path):
    """(URL, CA certificate file) of an HTTPS server with a self-signed certificate for localhost."""
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed (Debian: apt-get install openssl)")
    cert, key = tmp_path / "ca.pem", tmp_path / "ca.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    server = http.server.HTTPServer(("127.0.0.1", 0), _NoStudies)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://localhost:{server.server_address[1]}/dicom-web", cert
    finally:
        server.shutdown()
        server.server_close()


def test_an_untrusted_certificate_is_named_with_the_way_to_trust_it(tls_server, cli, monkeypatch, tmp_path):
    url, cert = tls_server
    monkeypatch.setenv("CNO_ANNOTATE_CONFIG", str(tmp_path / "config"))  # this test's own nodes
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    assert main(["pacs", "add", "study-pacs", "--dicomweb", url]) == 0
    code, out, err = cli("pacs", "echo", "study-pacs")
    assert code != 0
    assert "TLS connection" in err and "self-signed certificate" in err and "REQUESTS_CA_BUNDLE" in err
    assert "is the server running" not in err  # it is running: the certificate is the matter
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    code, out, err = cli("pacs", "echo", "study-pacs")
    assert code == 0, err
