"""Model download: -mu URL (resume, checksum, failures) and Hugging Face -hf/-hfr/-hff.

Everything is served from 127.0.0.1 by a small HTTP server in this module: plain files
(with Range support, or deliberately without), a truncating route, and the few Hugging Face
routes huggingface_hub uses (``HF_ENDPOINT`` points at it)."""
from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import re
import subprocess
import sys
import threading

import pytest

from webapp.download import DownloadError, cache_dir, fetch_hf, fetch_url

from ..gguf_builders import split_model

PAYLOAD = bytes(range(256)) * 4096          # 1 MiB of known bytes
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class Files(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, model_path):
        super().__init__(("127.0.0.1", 0), Handler)
        self.model_path = model_path
        self.log: list[tuple[str, str, dict]] = []
        self.files = {"/files/payload.bin": PAYLOAD, "/files/model.gguf": model_path,
                      "/no-range/payload.bin": PAYLOAD}
        self.hf = {"owner/smol": {"SmolLM2-135M-Instruct.Q4_1.gguf": model_path,
                                  "SmolLM2-135M-Instruct.Q8_0.gguf": PAYLOAD, "README.md": b"hi"}}

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"

    def requests_for(self, path):
        return [entry for entry in self.log if entry[1] == path]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self._answer(head=True)

    def do_GET(self):
        self._answer(head=False)

    def _answer(self, head: bool):
        srv = self.server
        srv.log.append((self.command, self.path, dict(self.headers)))
        path = self.path.split("?")[0]
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)", path)
        if m and m.group(1) in srv.hf:
            names = sorted(srv.hf[m.group(1)])
            return self._bytes(json.dumps({"id": m.group(1), "sha": COMMIT,
                                           "siblings": [{"rfilename": n} for n in names]}).encode(),
                               head, content_type="application/json")
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if m:
            content = srv.hf.get(m.group(1), {}).get(m.group(3))
            if content is None:
                return self._status(404, {"X-Error-Code": "EntryNotFound"})
            data = _content(content)
            etag = '"' + hashlib.sha1(m.group(3).encode()).hexdigest() + '"'
            return self._bytes(data, head, extra={"ETag": etag, "X-Repo-Commit": COMMIT})
        if path.startswith("/truncated/"):
            data = PAYLOAD
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if not head:
                self.wfile.write(data[:len(data) // 3])
            self.close_connection = True
            return None
        if path in srv.files:
            return self._bytes(_content(srv.files[path]), head, ranges=not path.startswith("/no-range/"))
        return self._status(404)

    def _status(self, code, extra=None):
        self.send_response(code)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _bytes(self, data: bytes, head: bool, ranges: bool = True, extra=None,
               content_type="application/octet-stream"):
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if ranges and m and int(m.group(1)) < len(data):
            start = int(m.group(1))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        elif ranges and m:
            return self._status(416)
        else:
            self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Accept-Ranges", "bytes" if ranges else "none")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(data[start:])
        return None


_cache: dict[str, bytes] = {}


def _content(value) -> bytes:
    if isinstance(value, bytes):
        return value
    if value not in _cache:
        with open(value, "rb") as f:
            _cache[value] = f.read()
    return _cache[value]


@pytest.fixture(scope="module")
def files(model_path):
    srv = Files(model_path)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("LLAMA_CACHE", str(folder))
    return folder


def quiet():
    return io.StringIO()


# --- fetch_url, in process ------------------------------------------------------------
def test_a_url_lands_in_the_cache_under_its_last_path_segment(files, cache):
    path = fetch_url(files.url + "/files/payload.bin?version=2", stream=quiet())
    assert path == str(cache / "payload.bin")
    assert open(path, "rb").read() == PAYLOAD
    assert os.listdir(cache) == ["payload.bin"]


def test_a_file_already_there_is_used_without_asking_the_server(files, cache):
    fetch_url(files.url + "/files/payload.bin", stream=quiet())
    before = len(files.log)
    fetch_url(files.url + "/files/payload.bin", stream=quiet())
    assert len(files.log) == before


def test_an_interrupted_download_resumes_with_a_range_request(files, cache):
    cache.mkdir()
    (cache / "payload.bin.part").write_bytes(PAYLOAD[:300_000])
    path = fetch_url(files.url + "/files/payload.bin", stream=quiet())
    assert open(path, "rb").read() == PAYLOAD
    assert files.requests_for("/files/payload.bin")[-1][2].get("Range") == "bytes=300000-"
    assert not (cache / "payload.bin.part").exists()


def test_a_server_that_ignores_ranges_gets_the_whole_file_again(files, cache):
    cache.mkdir()
    (cache / "payload.bin.part").write_bytes(b"x" * 1000)
    path = fetch_url(files.url + "/no-range/payload.bin", stream=quiet())
    assert open(path, "rb").read() == PAYLOAD


def test_a_truncated_download_keeps_only_the_part_file_and_resumes_later(files, cache, tmp_path):
    dest = str(tmp_path / "saved" / "model.bin")
    with pytest.raises(DownloadError, match="start again to resume"):
        fetch_url(files.url + "/truncated/payload.bin", dest, stream=quiet())
    assert not os.path.exists(dest) and os.path.getsize(dest + ".part") > 0
    fetch_url(files.url + "/files/payload.bin", dest, stream=quiet())
    assert open(dest, "rb").read() == PAYLOAD and not os.path.exists(dest + ".part")


def test_a_checksum_in_the_url_fragment_is_verified(files, cache):
    good = hashlib.sha256(PAYLOAD).hexdigest()
    path = fetch_url(files.url + f"/files/payload.bin#sha256={good}", stream=quiet())
    assert open(path, "rb").read() == PAYLOAD
    with pytest.raises(DownloadError, match="SHA-256"):          # the cached file is checked too
        fetch_url(files.url + "/files/payload.bin#sha256=" + "0" * 64, stream=quiet())


def test_a_checksum_mismatch_deletes_the_download(files, cache):
    with pytest.raises(DownloadError, match="SHA-256 mismatch"):
        fetch_url(files.url + "/files/payload.bin#sha256=" + "ab" * 32, stream=quiet())
    assert not cache.exists() or os.listdir(cache) == []


@pytest.mark.parametrize("url,message", [
    pytest.param("/files/missing.gguf", "HTTP 404", id="not-found"),
    pytest.param("/files/", "cannot name the file", id="no-file-name"),
    pytest.param("/files/..%2F..%2Fevil.gguf", "cannot name the file", id="dot-dot-name"),
    pytest.param("/files/payload.bin#md5=abc", "fragment", id="unknown-fragment"),
])
def test_failures_are_one_clear_line_and_leave_nothing_behind(files, cache, url, message):
    with pytest.raises(DownloadError, match=message) as info:
        fetch_url(files.url + url, stream=quiet())
    assert "\n" not in str(info.value)
    assert not cache.exists() or os.listdir(cache) == []


def test_only_http_urls_are_fetched(cache):
    with pytest.raises(DownloadError, match="http"):
        fetch_url("file:///etc/passwd", stream=quiet())


def test_the_cache_folder_follows_llama_cpp(monkeypatch, tmp_path):
    monkeypatch.delenv("LLAMA_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == str(tmp_path / "llama.cpp")
    monkeypatch.setenv("LLAMA_CACHE", "/somewhere")
    assert cache_dir() == "/somewhere"


def test_progress_is_reported_on_the_given_stream(files, cache):
    out = io.StringIO()
    fetch_url(files.url + "/files/payload.bin", stream=out)
    assert "payload.bin: 100%" in out.getvalue()


# --- the server command line ------------------------------------------------------------
def run_cli(*args, env):
    full_env = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-m", "webapp.cli", "--port", "0", *args],
                          capture_output=True, text=True, timeout=120, env=full_env)


@pytest.mark.slow
def test_the_server_downloads_its_model_then_serves_it(files, server_factory, tmp_path, model_path):
    digest = hashlib.sha256(_content(model_path)).hexdigest()
    env = {"LLAMA_CACHE": str(tmp_path / "cache")}
    srv = server_factory("-t", "1", "-np", "1", "-c", "256", "-mu",
                         files.url + f"/files/model.gguf#sha256={digest}", env=env)
    props = srv.get("/props").json()
    assert props["model_path"] == str(tmp_path / "cache" / "model.gguf")
    assert srv.post("/completion", json={"prompt": "Hi", "n_predict": 2}).status_code == 200
    assert sorted(os.listdir(tmp_path / "cache")) == ["model.gguf"]


def test_m_with_a_url_is_the_path_to_save_as(files, cache, tmp_path, monkeypatch):
    from webapp.cli import parse_settings
    from webapp.download import resolve_model
    dest = tmp_path / "models" / "mine.gguf"
    settings = parse_settings(["-mu", files.url + "/files/payload.bin", "-m", str(dest)], environ={})
    resolve_model(settings)
    assert settings.model == str(dest) and dest.read_bytes() == PAYLOAD
    assert not cache.exists()
    settings = parse_settings(["-mu", files.url + "/files/payload.bin"], environ={})
    resolve_model(settings)
    assert settings.model == str(cache / "payload.bin")


@pytest.mark.slow
@pytest.mark.parametrize("url,message", [
    pytest.param("/files/missing.gguf", "HTTP 404", id="not-found"),
    pytest.param("/truncated/model.gguf", "truncated", id="truncated"),
])
def test_a_failed_download_exits_with_one_line_before_listening(files, tmp_path, url, message):
    proc = run_cli("-mu", files.url + url, env={"LLAMA_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and (message in errors[0] or "interrupted" in errors[0])
    assert "Traceback" not in proc.stderr and "listening" not in proc.stderr
    left = os.listdir(tmp_path / "cache") if (tmp_path / "cache").exists() else []
    assert all(name.endswith(".part") for name in left)


# --- Hugging Face -------------------------------------------------------------------------
@pytest.mark.slow
def test_hf_shorthand_picks_the_quant_downloads_and_serves(files, server_factory, tmp_path):
    env = {"HF_ENDPOINT": files.url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1"}
    srv = server_factory("-t", "1", "-np", "1", "-c", "256", "-hf", "owner/smol:q4_1", "-hft", "secret-token",
                         env=env)
    props = srv.get("/props").json()
    assert props["model_path"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert props["model_path"].startswith(str(tmp_path / "hf"))
    sent = files.requests_for("/owner/smol/resolve/main/SmolLM2-135M-Instruct.Q4_1.gguf")
    assert sent and all(h.get("authorization") == "Bearer secret-token" or
                        h.get("Authorization") == "Bearer secret-token" for _, _, h in sent)


@pytest.fixture(scope="module")
def split_repo(files, model_path, tmp_path_factory):
    """owner/split on the fake hub: the default model in three gguf-split parts."""
    parts = split_model(model_path, str(tmp_path_factory.mktemp("split") / "Smol-Q4_1"), 3)
    files.hf["owner/split"] = {os.path.basename(p): p for p in parts}
    return parts


def hf_env(files, tmp_path):
    return {"HF_ENDPOINT": files.url, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1"}


@pytest.mark.slow
@pytest.mark.parametrize("dest", [pytest.param(None, id="hf-cache"), pytest.param("mine.gguf", id="with-m")])
def test_a_split_model_lands_whole_and_serves(files, split_repo, server_factory, tmp_path, dest):
    models = tmp_path / "models"
    args = ("-m", str(models / dest)) if dest else ()
    srv = server_factory("-t", "1", "-np", "1", "-c", "256", "-hf", "owner/split:q4_1", *args,
                         env=hf_env(files, tmp_path))
    first = srv.get("/props").json()["model_path"]
    if dest:   # the parts sit side by side under names libllama's split loader derives
        names = [f"mine-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
        assert first == str(models / names[0])
        assert sorted(os.listdir(models)) == names
        for name, part in zip(names, split_repo):
            assert (models / name).read_bytes() == _content(part)
    else:
        assert first.startswith(str(tmp_path / "hf")) and first.endswith("Smol-Q4_1-00001-of-00003.gguf")
    r = srv.post("/completion", json={"prompt": "The capital of France is", "n_predict": 4, "temperature": 0})
    assert r.status_code == 200 and r.json()["tokens_predicted"] == 4


@pytest.mark.parametrize("dest, first", [
    pytest.param("mine.gguf", "mine-00001-of-00003.gguf", id="plain-name"),
    pytest.param("mine-00001-of-00003.gguf", "mine-00001-of-00003.gguf", id="already-a-first-part"),
    pytest.param("mine-00002-of-00007.GGUF", "mine-00001-of-00003.gguf", id="another-split-suffix"),
    pytest.param("mine", "mine-00001-of-00003.gguf", id="no-extension"),
])
def test_split_parts_are_named_after_m(files, split_repo, tmp_path, monkeypatch, dest, first):
    for key, value in hf_env(files, tmp_path).items():
        monkeypatch.setenv(key, value)
    path = fetch_hf("owner/split", None, None, str(tmp_path / "models" / dest))
    assert path == str(tmp_path / "models" / first)
    stem = first[:-len("-00001-of-00003.gguf")]
    assert sorted(os.listdir(tmp_path / "models")) == [f"{stem}-0000{i}-of-00003.gguf" for i in (1, 2, 3)]


@pytest.mark.slow
@pytest.mark.parametrize("args,message", [
    pytest.param(["-hfr", "owner/smol", "-hff", "missing.gguf"], "missing.gguf", id="no-such-file"),
    pytest.param(["-hf", "owner/smol:IQ1_S"], "no GGUF file for IQ1_S", id="no-such-quant"),
    pytest.param(["-hf", "nobody/nothing"], "cannot list", id="no-such-repo"),
    pytest.param(["-hff", "x.gguf"], "--hf-file needs --hf-repo", id="file-without-repo"),
])
def test_hf_failures_exit_with_one_line(files, tmp_path, args, message):
    proc = run_cli(*args, env={"HF_ENDPOINT": files.url, "HF_HOME": str(tmp_path / "hf"),
                               "HF_HUB_DISABLE_TELEMETRY": "1"})
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_unreachable_server_is_one_line_and_leaves_nothing(cache):
    with pytest.raises(DownloadError, match="cannot download"):
        fetch_url("http://127.0.0.1:1/model.gguf", stream=quiet())
    assert not cache.exists() or os.listdir(cache) == []


@pytest.mark.slow
def test_create_app_from_the_environment_downloads_too(files, cache, monkeypatch):
    from webapp import create_app
    monkeypatch.setenv("LLAMA_ARG_MODEL_URL", files.url + "/files/model.gguf")
    monkeypatch.setenv("LLAMA_ARG_THREADS", "1")
    monkeypatch.setenv("LLAMA_ARG_CTX_SIZE", "256")
    app = create_app()
    engine = app.extensions["llama"].engine
    try:
        assert app.test_client().get("/health").get_json()["status"] == "ok"
        assert engine.model.path == str(cache / "model.gguf")
    finally:
        engine.stop()


def test_mmu_downloads_the_projector_like_the_model(files, cache, tmp_path):
    from webapp.cli import parse_settings
    from webapp.download import resolve_model
    settings = parse_settings(["-m", "model.gguf", "-mmu", files.url + "/files/payload.bin"], environ={})
    resolve_model(settings)
    assert settings.mmproj == str(cache / "payload.bin") and settings.model == "model.gguf"
    dest = tmp_path / "mine-mmproj.gguf"
    settings = parse_settings(["-m", "model.gguf", "-mmu", files.url + "/files/payload.bin", "-mm", str(dest)],
                              environ={})
    resolve_model(settings)
    assert settings.mmproj == str(dest) and dest.read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match="--mmproj-url must be an http"):
        resolve_model(parse_settings(["-m", "model.gguf", "-mmu", "ftp://x/y"], environ={}))

