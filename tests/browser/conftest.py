"""Playwright fixtures: Debian's chromium (never a downloaded browser), one per session.

``browser`` launches /usr/bin/chromium headless (Playwright gives it a fresh temporary profile); ``new_page(viewport)``
opens a page in a fresh context (its own localStorage) that records console errors and
uncaught exceptions in ``page.errors``. Tests that need the browser are skipped, with the
reason, when chromium or Playwright is missing.
"""
from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="session")
def browser():
    if os.environ.get("CI"):   # CI installs both: a missing one is a failure, not a skip
        from playwright import sync_api
        assert shutil.which(CHROMIUM), f"{CHROMIUM} is not installed"
    sync_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        # launch() gives the browser a fresh temporary profile of its own (and removes it).
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def new_page(browser):
    contexts = []

    def make(viewport=DESKTOP, **kw):
        context = browser.new_context(viewport=viewport, **kw)
        context.set_default_timeout(30_000)
        contexts.append(context)
        page = context.new_page()
        page.errors = []
        page.on("console", lambda m: m.type == "error" and page.errors.append(f"console: {m.text}"))
        page.on("pageerror", lambda e: page.errors.append(f"exception: {e}"))
        return page

    yield make
    for context in contexts:
        context.close()
