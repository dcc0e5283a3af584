"""The report as a reader's browser shows it: headless Chromium (Debian's package) driven by Playwright.

Checked on a report rendered from the literal fixture run and on every committed ``report/*/index.html``:
the claims summary is on the first screen (1280 x 900), the page is at most 10,000 px tall with its
details folded, nothing scrolls sideways at 500 px, every image loads, and the viewport meta is there."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fixtures import make_run_folder

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Without the background-networking flags Chromium keeps trying hosts that a closed network refuses.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
# The committed reports of runs; report/history/ is a speed timeline, a page without claims (checked apart).
COMMITTED = sorted(p for p in ROOT.glob("report/*/index.html") if p.parent.name != "history")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright's Python package is not installed")
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install -y chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def fixture_report(tmp_path_factory):
    from harness.report.build import build_report

    root = tmp_path_factory.mktemp("browser")
    run_dir = make_run_folder(root, claims=["depth_helps", "bidirectional_slow", "bidirectional_useless"])
    return build_report(run_dir, root / "report") / "index.html"


def measure(browser, page_path: Path, width: int, height: int) -> dict:
    page = browser.new_page(viewport={"width": width, "height": height})
    try:
        page.goto(page_path.resolve().as_uri())
        page.wait_for_load_state("load")
        # Lazy images load when scrolled to: bring each into view before asking whether it loaded.
        page.evaluate("() => document.querySelectorAll('img').forEach(i => i.loading = 'eager')")
        page.wait_for_function("() => Array.from(document.images).every(i => i.complete)")
        return page.evaluate("""() => {
            const summary = document.querySelector('table.summary');
            const box = summary ? summary.getBoundingClientRect() : null;
            return {
                summaryTop: box ? box.top + window.scrollY : null,
                summaryBottom: box ? box.bottom + window.scrollY : null,
                height: document.documentElement.scrollHeight,
                scrollWidth: document.documentElement.scrollWidth,
                innerWidth: window.innerWidth,
                images: document.images.length,
                broken: Array.from(document.images).filter(i => !(i.naturalWidth > 0)).length,
                missingAlt: Array.from(document.images).filter(i => !i.alt).length,
                viewport: !!document.querySelector('meta[name=viewport]'),
                anchors: Array.from(document.querySelectorAll('nav a')).map(a => a.getAttribute('href')),
                ids: Array.from(document.querySelectorAll('[id]')).map(e => '#' + e.id),
            };
        }""")
    finally:
        page.close()


def check_page(browser, path: Path) -> dict:
    """What every page of the harness must do in a browser: its images load and have alt text, it sets a
    viewport, and a narrow window needs no sideways scrolling."""
    wide = measure(browser, path, 1280, 900)
    assert wide["images"] > 0 and wide["broken"] == 0 and wide["missingAlt"] == 0, wide
    assert wide["viewport"]
    narrow = measure(browser, path, 500, 900)
    assert narrow["scrollWidth"] <= narrow["innerWidth"], narrow
    return wide


def check(browser, path: Path) -> None:
    wide = check_page(browser, path)
    assert wide["summaryTop"] is not None, "no claims summary table"
    assert wide["summaryTop"] < 900, wide
    assert wide["height"] <= 10_000, wide
    assert wide["anchors"] and set(wide["anchors"]) <= set(wide["ids"]), wide["anchors"]


def test_fixture_report_reads_in_a_browser(browser, fixture_report):
    check(browser, fixture_report)


@pytest.mark.parametrize("path", COMMITTED, ids=[p.parent.name for p in COMMITTED])
def test_committed_reports_read_in_a_browser(browser, path):
    check(browser, path)


def test_the_committed_speed_timeline_reads_in_a_browser(browser):
    check_page(browser, ROOT / "report" / "history" / "index.html")
