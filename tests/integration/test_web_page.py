"""The web page in a real headless Chromium (Debian's, driven by Playwright): upload a text,
watch the model train, generate text that streams into the page."""

from __future__ import annotations

import shutil

import pytest

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# This machine has no network: keep Chromium from phoning home (each attempt is refused).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def page(serve_app):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                             headless=True)
        page = browser.new_page()
        page.goto(serve_app + "/")
        yield page
        browser.close()


def test_upload_train_and_generate_on_the_page(page, shakespeare, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("web")
    corpus = tmp_path / "play.txt"
    corpus.write_text(shakespeare[:30_000], encoding="utf-8")
    page.set_input_files("#file", str(corpus))
    page.fill("#name", "from-browser")
    page.fill("input[name=max_steps]", "30")
    page.fill("input[name=lstm_size]", "32")
    page.fill("input[name=save_every_n]", "15")
    page.click("#upload-button")
    page.wait_for_selector("#message:has-text('queued from-browser version 1')", timeout=30_000)

    row = "tr[data-model='from-browser']"
    page.wait_for_selector(f"{row} td.status:has-text('ready')", timeout=400_000)
    page.click(row)
    page.wait_for_selector("#log:has-text('step 30/30')", timeout=30_000)

    page.fill("#prime", "ROMEO:")
    page.fill("#max_length", "120")
    page.fill("#seed", "7")
    page.click("#generate-button")
    try:
        page.wait_for_selector("#output[data-done=true]", timeout=60_000)
    finally:
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    text = page.text_content("#output")
    assert text.startswith("ROMEO:") and len(text) == len("ROMEO:") + 120
