"""The front end's routes over the Flask test client and a fake engine (fast, no browser):
the page and its config block, /completion.js, /static, --path, --no-webui, --api-key."""
from __future__ import annotations

import json
import os
import re

import pytest

from tests.unit.fakes import FakeEngine
from webapp import create_app
from webapp.cli import parse_settings


def client_for(*argv, **overrides):
    settings = parse_settings(list(argv), environ={})
    for key, value in overrides.items():
        setattr(settings, key, value)
    return create_app(settings, FakeEngine("hi")).test_client()


def page_config(html: str) -> dict:
    block = re.search(r'<script id="server-config" type="application/json">(.*?)</script>', html, re.S)
    return json.loads(block.group(1))


def is_openai_404(r) -> bool:
    return r.status_code == 404 and r.get_json()["error"]["type"] == "not_found_error"


@pytest.fixture(scope="module")
def client():
    return client_for()


def test_the_page_carries_its_urls_and_defaults(client):
    r = client.get("/")
    assert r.status_code == 200 and r.mimetype == "text/html"
    config = page_config(r.get_data(as_text=True))
    assert config["urls"] == {"completion": "/completion", "chat": "/v1/chat/completions",
                              "props": "/props", "health": "/health"}
    assert config["api_key_required"] is False
    assert config["defaults"]["temperature"] == 0.8 and config["defaults"]["top_k"] == 40
    assert client.get("/index.html").get_data() == r.get_data()


def test_the_config_block_cannot_break_out_of_its_script_tag():
    client = client_for(alias="</script><script>alert(1)</script>")
    html = client.get("/").get_data(as_text=True)
    assert "<script>alert(1)" not in html
    assert page_config(html)["model"] == "</script><script>alert(1)</script>"


@pytest.mark.parametrize("path,mimetype", [
    pytest.param("/completion.js", "text/javascript", id="completion.js"),
    pytest.param("/static/completion.js", "text/javascript", id="completion.js-under-static"),
    pytest.param("/static/js/app.js", "text/javascript", id="app-module"),
    pytest.param("/static/css/app.css", "text/css", id="stylesheet"),
    pytest.param("/static/favicon.svg", "image/svg+xml", id="icon"),
])
def test_assets_are_served_with_the_right_type(client, path, mimetype):
    r = client.get(path)
    assert r.status_code == 200 and r.mimetype == mimetype


def test_completion_js_exports_the_seed_helpers(client):
    source = client.get("/completion.js").get_data(as_text=True)
    for name in ("async function* llama(", "function llamaEventTarget(", "async function llamaPromise(",
                 "async function llamaComplete(", "async function llamaModelInfo("):
        assert f"export {name}" in source, name


@pytest.mark.parametrize("path", [
    pytest.param("/static/nope.js", id="missing"),
    pytest.param("/static/../routes/ui.py", id="dot-dot"),
    pytest.param("/static/%2e%2e/routes/ui.py", id="encoded-dot-dot"),
    pytest.param("/static/..%2f..%2fflags.py", id="encoded-slash"),
    pytest.param("/static//etc/passwd", id="absolute"),
    pytest.param("/static/a%00b", id="nul-byte"),          # was a 500 (ValueError in realpath)
])
def test_static_never_leaves_its_folder(client, path):
    assert is_openai_404(client.get(path, follow_redirects=True))   # "//" redirects to "/" first


@pytest.mark.parametrize("path", ["/", "/index.html", "/completion.js", "/static/css/app.css"])
def test_no_webui_turns_the_front_end_off(path):
    assert is_openai_404(client_for("--no-webui").get(path))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    base = tmp_path_factory.mktemp("site")
    root = base / "public"
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_text("<h1>my page</h1>")
    (root / "sub" / "index.html").write_text("sub page")
    (root / "app.mjs").write_text("export const x = 1;")
    (base / "secret.txt").write_text("do not serve")
    os.symlink(base / "secret.txt", root / "link.txt")
    return root


def test_path_serves_its_files_first(site):
    client = client_for("--path", str(site))
    assert client.get("/").get_data(as_text=True) == "<h1>my page</h1>"
    assert client.get("/sub/").get_data(as_text=True) == "sub page"
    r = client.get("/app.mjs")
    assert r.status_code == 200 and r.mimetype == "text/javascript"
    assert "export async function* llama(" in client.get("/completion.js").get_data(as_text=True)
    assert client.get("/static/css/app.css").status_code == 200
    assert client.get("/health").status_code == 200      # API routes still win over files


@pytest.mark.parametrize("path", [
    pytest.param("/../secret.txt", id="dot-dot"),
    pytest.param("/%2e%2e/secret.txt", id="encoded-dot-dot"),
    pytest.param("/sub/..%2f..%2fsecret.txt", id="encoded-slash"),
    pytest.param("/link.txt", id="symlink-out"),
    pytest.param("/nope.html", id="missing"),
    pytest.param("/index.html%00.txt", id="nul-byte"),
])
def test_path_never_leaves_its_folder(site, path):
    r = client_for("--path", str(site)).get(path)
    assert is_openai_404(r)
    assert b"do not serve" not in r.get_data()


@pytest.fixture(scope="module")
def linked_site(tmp_path_factory):
    """A --path folder whose index.html files are symlinks, some leading out of it."""
    base = tmp_path_factory.mktemp("linked")
    root, outside = base / "public", base / "outside"
    for folder in (root / "sub", root / "real", root / "in", outside):
        folder.mkdir(parents=True)
    (outside / "index.html").write_text("do not serve")
    (root / "real" / "index.html").write_text("real page")
    (root / "page.html").write_text("inner page")
    os.symlink(outside / "index.html", root / "index.html")               # out, absolute
    os.symlink("../../outside/index.html", root / "sub" / "index.html")   # out, relative
    os.symlink(outside, root / "outdir")                                  # a folder out
    os.symlink("../page.html", root / "in" / "index.html")                # stays inside
    os.symlink(root / "real", root / "alias")                             # a folder inside
    return root


@pytest.mark.parametrize("path", [
    pytest.param("/sub/", id="folder-index-out"),
    pytest.param("/sub", id="folder-index-out-no-slash"),
    pytest.param("/sub/index.html", id="index-out"),
    pytest.param("/outdir/", id="folder-out"),
    pytest.param("/outdir/index.html", id="file-in-folder-out"),
])
def test_symlinked_index_files_never_lead_out(linked_site, path):
    r = client_for("--path", str(linked_site)).get(path, follow_redirects=True)
    assert is_openai_404(r)
    assert b"do not serve" not in r.get_data()


@pytest.mark.parametrize("path", ["/", "/index.html"])
def test_a_root_index_leading_out_gives_the_built_in_page(linked_site, path):
    r = client_for("--path", str(linked_site)).get(path)
    assert r.status_code == 200 and b"do not serve" not in r.get_data()
    assert page_config(r.get_data(as_text=True))["urls"]["completion"] == "/completion"


@pytest.mark.parametrize("path, text", [
    pytest.param("/in/", "inner page", id="folder-index-inside"),
    pytest.param("/in/index.html", "inner page", id="index-inside"),
    pytest.param("/alias/", "real page", id="folder-inside"),
    pytest.param("/alias/index.html", "real page", id="file-in-folder-inside"),
])
def test_symlinks_that_stay_inside_keep_working(linked_site, path, text):
    r = client_for("--path", str(linked_site)).get(path)
    assert r.status_code == 200 and r.get_data(as_text=True) == text


def test_path_that_is_not_a_folder_stops_startup(tmp_path):
    with pytest.raises(SystemExit, match="--path"):
        client_for("--path", str(tmp_path / "missing"))


def test_with_api_keys_the_page_is_public_and_asks_for_a_key():
    client = client_for(api_key=["sekrit"])
    r = client.get("/")
    assert r.status_code == 200
    assert page_config(r.get_data(as_text=True))["api_key_required"] is True
    assert client.get("/completion.js").status_code == 200
    assert client.get("/static/js/app.js").status_code == 200
    assert client.post("/completion", json={"prompt": "x"}).status_code == 401
    ok = client.post("/completion", json={"prompt": "x"}, headers={"Authorization": "Bearer sekrit"})
    assert ok.status_code == 200
