"""The Dagster UI in a real browser: `billing ui` on loopback over a demo month, the asset graph
opened in headless Chromium (Debian's chromium and chromium-driver, which .ci/run installs), a
screenshot of each page kept in test-artifacts/."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from dagster_ui import running_ui
from test_errors import run_cli

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
                                       "chromium-driver; .ci/run installs them)")


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1920,1200"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _open(driver, url: str, *texts: str, screenshot: str, timeout: float = 90) -> str:
    """The page once every text is on it (the UI renders the graph after loading the location)."""
    driver.get(url)
    deadline = time.monotonic() + timeout
    page = ""
    while time.monotonic() < deadline:
        page = driver.find_element("tag name", "body").text
        if all(t in page for t in texts):
            break
        time.sleep(0.5)
    time.sleep(1)  # let the edges finish drawing before the picture
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / screenshot))
    return page


def test_the_asset_graph_shows_the_pipeline_in_chromium(tmp_path):
    demo = run_cli("demo", "--month", "2026-10", "--events", "5000", "--orgs", "4", "--projects", "6", "--chains", "2",
                   env_overrides={}, tmp_path=tmp_path)
    assert demo.returncode == 0, demo.stderr[-3000:]
    with running_ui(tmp_path / "state") as port:
        driver = _browser()
        try:
            lineage = _open(driver, f"http://127.0.0.1:{port}/asset-groups", "usage", "billing", "sinks", "proof",
                            "analytics", screenshot="global-asset-lineage.png")
            billing = _open(driver, f"http://127.0.0.1:{port}/locations/billing_pipeline/asset-groups/billing/lineage",
                            "rated_charges", "invoice_drafts", "fx_snapshot", screenshot="asset-graph-billing.png")
            analytics = _open(driver, f"http://127.0.0.1:{port}/locations/billing_pipeline/asset-groups/analytics/"
                                      "lineage", "revenue_per_chain", screenshot="asset-graph-analytics.png")
        finally:
            driver.quit()
    assert "Global asset lineage" in lineage
    for group in ("usage", "billing", "sinks", "proof", "analytics"):
        assert group in lineage
    # the group's assets with their checks and partitions, and its neighbours upstream and downstream
    for text in ("rated_charges", "invoice_drafts", "fx_snapshot", "contracts", "usage_rollups", "stripe_invoices",
                 "parasut_invoices", "audit_snapshot", "Asset checks", "Partitions"):
        assert text in billing, text
    # a larger graph: the UI draws the part in view (dbt models, with the dbt kind and their tests as checks)
    for text in ("revenue_per_chain", "stg_invoices", "dbt", "Asset checks"):
        assert text in analytics, text
    assert (ARTIFACTS / "asset-graph-billing.png").stat().st_size > 20_000
