"""The report page in a real headless browser: it loads without errors and draws one timeline bar per stage.

Drives Chromium through Playwright (pip-installable). The browser is Playwright's own when `playwright install
chromium` has run, else the system's (Debian: `apt-get install chromium-headless-shell` or `chromium`); the
test skips, saying so, when neither is there.
"""

from __future__ import annotations

import shutil

import pytest

import edgec
from edgec.manifest import read_manifest

from conftest import MULTI, TRIO, save_text_model

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

SYSTEM_BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch()
        except sync_api.Error:
            path = next((shutil.which(n) for n in SYSTEM_BROWSERS if shutil.which(n)), None)
            if path is None:
                pytest.skip("no headless Chromium: run `playwright install chromium` or "
                            "`apt-get install chromium-headless-shell`")
            b = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield b
        b.close()


def test_the_report_loads_without_errors_and_shows_one_timeline_bar_per_stage(browser, tmp_path):
    model = save_text_model(MULTI, tmp_path / "multi.onnx")
    out = tmp_path / "out"
    edgec.compile(model, TRIO, out, strategy="even")
    page_path = edgec.report(out).path
    names = sorted(s.name for s in read_manifest(out).stages)
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("request", lambda r: None if r.url.startswith(("file:", "data:", "about:")) else problems.append(r.url))
    page.goto(page_path.as_uri())
    assert problems == []
    frame0 = page.locator('rect.bar.predicted.stage[data-frame="0"]')
    assert sorted(frame0.nth(i).get_attribute("data-stage") for i in range(frame0.count())) == names
    for i in range(frame0.count()):  # drawn, not just present: each bar has a size on screen
        box = frame0.nth(i).bounding_box()
        assert box is not None and box["width"] >= 1 and box["height"] > 10
    assert page.locator("svg.graph g.box").count() == len(edgec.analyze(model, TRIO).groups)
    page.close()
