"""The demo page in a real browser: Playwright drives Debian's Chromium (/usr/bin/chromium; never
``playwright install``) against the real Ray Serve app (``start_demo`` on local Ray, 127.0.0.1).

Reconstruct tab: upload a SynthPeople-like photo → the 3D viewer, the camera readout, the mask in
the editor and the turntable GIF appear; the edited mask and a typed box re-run it; a too-small
photo shows the REST API's one-line error. Search tab: upload a query → k captioned results.
Screenshots go to the test's tmp dir.

Chromium missing is a failure, never a skip: ``make test`` installs it (``apt-get install -y
chromium``) when it runs as root.
"""

from __future__ import annotations

import pathlib
import re
import socket

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page, expect, sync_playwright

import dataset_fixtures
from mirror3d.serve_apps.app import start_demo, stop_demo
from mirror3d.serve_apps.options import DemoOptions
from mirror3d.serve_apps.ui import wait_for_mesh

CHROMIUM = pathlib.Path("/usr/bin/chromium")
#: Headless Chromium in a container: no sandbox, no GPU, nothing phoning home.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]
TOP_K = 5
#: Model loading and the first request run on a busy 2-core machine: generous waits.
TIMEOUT_MS = 180_000
CAPTION = re.compile(r"^#\d+ -?\d\.\d{3} pid -?\d+ cam \d+( [✓✗])?$")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, pathlib.Path]:
    """A person-like photo named like a Market-1501 query of pid 3 (in the tiny gallery, so the
    strip shows ✓/✗), and a photo below the 16-pixel minimum side."""
    d = tmp_path_factory.mktemp("photos")
    image, _ = dataset_fixtures.person_pair(64, 128, (0.4, 0.8), seed=1)
    person = d / "0003_c1s1_000001_00.png"
    Image.fromarray(image).save(person)
    tiny = d / "tiny.png"
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(tiny)
    return {"person": person, "tiny": tiny}


@pytest.fixture(scope="module")
def demo_url(ray_session, demo_runs, tmp_path_factory):
    opts = DemoOptions(casl=str(demo_runs.casl), reid=str(demo_runs.reid), port=_free_port(),
                       top_k=TOP_K, mesh_dir=str(tmp_path_factory.mktemp("meshes")),
                       index_dir=str(tmp_path_factory.mktemp("index")), ui=True)
    url = start_demo(opts)
    try:
        yield url
    finally:
        stop_demo()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's Chromium with `apt-get install -y "
                    f"chromium` (as root, `make test` does it); never `playwright install`",
                    pytrace=False)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        try:
            yield b
        finally:
            b.close()


def _status(page: Page, text: str) -> None:
    expect(page.locator("#m3d-status")).to_contain_text(text, timeout=TIMEOUT_MS)


def test_demo_page_in_browser(demo_url, browser, photos, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{demo_url}/ui/")

    # Reconstruct: upload → the viewer (a WebGL canvas), the camera readout, the editor's mask.
    page.locator("#m3d-photo input[type=file]").set_input_files(photos["person"])
    readout = page.locator("#m3d-readout")
    expect(readout).to_contain_text("azimuth", timeout=TIMEOUT_MS)
    for name in ("elevation", "distance", "bias", "light", "vertices"):
        expect(readout).to_contain_text(name)
    expect(page.locator("#m3d-viewer canvas")).to_be_visible()
    wait_for_mesh(page)
    _status(page, "automatic estimate")
    expect(page.locator("#m3d-editor canvas").first).to_be_visible()
    expect(page.locator("#m3d-turntable img")).to_have_attribute("src", re.compile(r"\.gif"))
    expect(page.locator("#m3d-novel img")).to_be_visible()
    page.screenshot(path=tmp_path / "reconstruct.png", full_page=True)

    # The mask as left in the editor goes back to the server; so does a typed box.
    page.get_by_role("button", name="Reconstruct with this mask", exact=True).click()
    _status(page, "your mask")
    page.get_by_label("Box x0,y0,x1,y1 (photo pixels)").fill("8,6,56,122")
    page.get_by_role("button", name="GrabCut in box", exact=True).click()
    _status(page, "GrabCut in your box")

    # Bad input: the same one line the REST API answers, in Gradio's error toast.
    page.locator("#m3d-photo input[type=file]").set_input_files(photos["tiny"])
    expect(page.get_by_text("smaller than the 16-pixel minimum side").first).to_be_visible(
        timeout=TIMEOUT_MS)

    # Search: upload a query → k captioned results, best first.
    page.get_by_role("tab", name="Search", exact=True).click()
    page.locator("#m3d-query input[type=file]").set_input_files(photos["person"])
    items = page.locator("#m3d-gallery .thumbnail-item")
    expect(items).to_have_count(TOP_K, timeout=TIMEOUT_MS)
    captions = page.locator("#m3d-gallery .caption-label").all_inner_texts()
    assert len(captions) == TOP_K
    assert all(CAPTION.match(c.strip()) for c in captions), captions
    assert [int(c.split()[0][1:]) for c in captions] == list(range(1, TOP_K + 1))
    scores = [float(c.split()[1]) for c in captions]
    assert scores == sorted(scores, reverse=True)
    assert any(c.strip()[-1] in "✓✗" for c in captions)  # the query's pid is known
    expect(page.locator("#m3d-search-info")).to_contain_text(f"Top {TOP_K}")
    page.screenshot(path=tmp_path / "search.png", full_page=True)
    assert (tmp_path / "reconstruct.png").stat().st_size > 0
    assert (tmp_path / "search.png").stat().st_size > 0
    page.close()
