"""The HTML report in a real browser (Debian's chromium, headless, driven by tests/browser.py), and a
real run's reports for CI: plain timestamped progress lines, report.html, JUnit per SLO and
GITHUB_STEP_SUMMARY.

Set AICHAOS_UPDATE_SCREENSHOT=1 to save the real run's report as docs/report.png (the README's).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from aichaos.report.formats import FORMATS
from aichaos.report.journal import read_journal
from tests.browser import Chromium, Page, find_chromium
from tests.conftest import ROOT
from tests.integration.test_report import REPORT
from tests.integration.test_run import assert_nothing_left, journal, run

CHROMIUM, WHY = find_chromium()
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason=WHY)
FIXTURE = ROOT / "tests" / "fixtures" / "journal-v2" / "completed"


def open_report(browser: Chromium, path: Path) -> Page:
    page = browser.page()
    page.open(path.as_uri())
    return page


def assert_renders(page: Page, path: Path, shot: Path, charts: set[str]) -> None:
    # every chart drawn: a canvas of non-zero size in each chart's box
    sizes = page.evaluate("Object.fromEntries(Array.from(document.querySelectorAll('.chart')).map(c => "
                          "[c.id, (b => b ? [b.width, b.height] : [0, 0])(c.querySelector('canvas')"
                          "?.getBoundingClientRect())]))")
    assert charts <= set(sizes), sizes
    assert all(w > 100 and h > 100 for w, h in sizes.values()), sizes
    strip = page.evaluate("document.querySelector('svg.strip').getBoundingClientRect().width")
    assert strip > 100
    assert page.console_errors() == []
    # one self-contained file: the browser fetched nothing but the file itself
    assert page.requests() == [path.as_uri()]
    # the screenshot is not blank: many colours, and a good share of the page is not background
    from PIL import Image

    page.screenshot(shot)
    image = Image.open(shot).convert("RGB")
    small = image.resize((image.width // 4, image.height // 4))
    pixels = list(small.get_flattened_data())
    colours = len(set(pixels))
    inked = sum(1 for p in pixels if p != (255, 255, 255)) / len(pixels)
    assert colours > 50 and inked > 0.05, (colours, inked)


@needs_browser
def test_the_report_of_a_recorded_run_renders_its_charts_without_errors_or_requests(tmp_path):
    path = tmp_path / "report.html"
    path.write_text(FORMATS["html"](read_journal(FIXTURE)))
    with Chromium() as browser:
        page = open_report(browser, path)
        assert_renders(page, path, tmp_path / "report.png",
                       {"chart-latency", "chart-errors", "chart-rate", "chart-scraped-frontend"})
        # the fault band is drawn on the latency chart: translucent red pixels (the canvas is transparent)
        tinted = page.evaluate("""(() => {
            const c = document.querySelector('#chart-latency canvas'), ctx = c.getContext('2d');
            const d = ctx.getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && d[i + 3] < 80 && d[i] > 3 * d[i + 1]) n++;
            return n; })()""")
        assert tinted > 1000


def test_a_real_run_in_ci_prints_plain_lines_and_writes_its_reports(tmp_path, monkeypatch):
    summary = tmp_path / "step-summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    run_dir = tmp_path / "run"
    ran = run(["run", str(REPORT), "--run-dir", str(run_dir)])
    assert ran.returncode == 1, ran.stderr + ran.stdout  # degradation.p50_ms cannot hold under +50 ms
    assert_nothing_left(journal(run_dir))
    # plain, timestamped progress lines on stderr, one a second (the window is 1 s)
    lines = [line for line in ran.stderr.splitlines() if re.match(r"\d\d:\d\d:\d\d \[", line)]
    assert any(re.match(r"\d\d:\d\d:\d\d \[baseline \d/3s, phase 1/3\] \| \d+ req/s · p50 ", line) for line in lines)
    assert any("[fault " in line and "faults: latency on frontend->backend" in line for line in lines), ran.stderr
    assert "\x1b[" not in ran.stderr  # nothing interactive in CI
    # GITHUB_STEP_SUMMARY: the Markdown report appended
    assert summary.read_text() == "earlier step\n" + (run_dir / "report.md").read_text()
    # JUnit: a case per gate and per bound of the SLO, with the value measured in each phase
    suite = ET.parse(run_dir / "junit.xml").getroot()
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert {"slo.p95_ms", "slo.error_rate", "slo.frontend/echo_in_flight"} <= set(cases)
    p95 = cases["slo.p95_ms"].findtext("system-out") or ""
    assert re.match(r"baseline \d+\.\d ms, fault 5\d\.\d ms, recovery \d+\.\d ms \(limit <= 200\.0 ms\)", p95), p95
    # report.html, as `aichaos report --format html` makes it
    again = run(["report", str(run_dir), "--format", "html", "-o", str(tmp_path / "again.html")])
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again.html").read_text() == (run_dir / "report.html").read_text()
    if CHROMIUM is None:
        pytest.skip(f"report.html not opened: {WHY}")
    shot = tmp_path / "report.png"
    with Chromium() as browser:
        page = open_report(browser, run_dir / "report.html")
        assert_renders(page, run_dir / "report.html", shot,
                       {"chart-latency", "chart-errors", "chart-rate", "chart-scraped-frontend"})
        if os.environ.get("AICHAOS_UPDATE_SCREENSHOT"):
            page.screenshot(shot, scale=0.5)
            from PIL import Image

            image = Image.open(shot).convert("RGB")
            buffer = io.BytesIO()
            image.quantize(colors=64).save(buffer, format="PNG", optimize=True)
            (ROOT / "docs").mkdir(exist_ok=True)
            (ROOT / "docs" / "report.png").write_bytes(buffer.getvalue())
    shutil.rmtree(run_dir / "logs", ignore_errors=True)


@needs_browser
def test_the_report_of_a_run_that_never_started_opens_without_errors(tmp_path):
    from aichaos.report.journal import Journal

    record = Journal(run_id="x", run_dir=tmp_path, experiment_file="e.yaml", stack_file="s.yaml",
                     experiment={"name": "never"}, status="error", verdict="error", exit_code=3,
                     errors=["service 'backend' exited with code 1 while starting"])
    path = tmp_path / "report.html"
    path.write_text(FORMATS["html"](record))
    with Chromium() as browser:
        page = open_report(browser, path)
        assert page.console_errors() == []
        assert "exited with code 1 while starting" in page.evaluate("document.body.innerText")
