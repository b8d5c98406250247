"""Screenshots of the demo page for the README: docs/images/demo_reconstruct.png and
docs/images/demo_search.png.

Serves the page in this process (:class:`mirror3d.serve_apps.local_api.LocalServer`: the same
Gradio page the Ray Serve ingress mounts, over the engine services directly), drives Debian's
Chromium with Playwright (never ``playwright install``), uploads a SynthPeople photo on the
*Reconstruct* tab and as the query on the *Search* tab, and saves both pages.

    python benchmarks/demo_screenshots.py                      # the newest runs under runs/
    python benchmarks/demo_screenshots.py --casl runs/pipeline/cpu-default/casl \\
        --reid runs/pipeline/cpu-default/reid/casl-visible \\
        --image data/synthpeople/Market-1501/query/0101_c1s1_001207_00.jpg

Not a timing benchmark. The first run on a re-id run builds its gallery index (minutes).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time


from mirror3d.utils.env import apply_local_env

apply_local_env()

from playwright.sync_api import expect, sync_playwright  # noqa: E402

from mirror3d.engine.demo_runs import newest_demo_runs  # noqa: E402
from mirror3d.serve_apps.local_api import LocalDemoApi, LocalServer  # noqa: E402
from mirror3d.serve_apps.ui import wait_for_mesh  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]
TIMEOUT_MS = 300_000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--casl", help="CASL run (default: the newest under --runs)")
    ap.add_argument("--reid", help="re-id run (default: the newest servable under --runs)")
    ap.add_argument("--runs", default="runs", help="runs root for the defaults")
    ap.add_argument("--image", help="the photo (default: the first SynthPeople query image)")
    ap.add_argument("--k", type=int, default=10, help="results on the Search tab")
    ap.add_argument("--out", default="docs/images", help="where the PNGs go")
    ap.add_argument("--width", type=int, default=1400, help="browser window width (px)")
    ap.add_argument("--settle", type=float, default=2.0,
                    help="seconds to wait once the 3D viewer has drawn, before the screenshot")
    args = ap.parse_args(argv)

    casl, reid = args.casl, args.reid
    if not (casl and reid):
        found = newest_demo_runs(args.runs)
        casl, reid = casl or found[0], reid or found[1]
    if not (casl and reid):
        print(f"demo_screenshots: no CASL / re-id run under {args.runs}; train them with "
              f"`make run` or name them with --casl RUN --reid RUN", file=sys.stderr)
        return 1
    image = pathlib.Path(args.image) if args.image else next(
        iter(sorted(pathlib.Path("data/synthpeople/Market-1501/query").glob("*.jpg"))), None)
    if image is None or not image.is_file():
        print(f"demo_screenshots: no photo ({image}); pass --image", file=sys.stderr)
        return 1
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    api = LocalDemoApi.from_runs(casl, reid, top_k=args.k)
    print(f"loaded {casl} and {reid} in {time.perf_counter() - t0:.1f} s")
    with LocalServer(api) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        # a short window: full-page screenshots end where the page's content ends
        page = browser.new_page(viewport={"width": args.width, "height": 600})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(f"{url}/ui/")

        page.locator("#m3d-photo input[type=file]").set_input_files(image)
        expect(page.locator("#m3d-readout")).to_contain_text("azimuth", timeout=TIMEOUT_MS)
        expect(page.locator("#m3d-novel img")).to_be_visible()
        wait_for_mesh(page)
        time.sleep(args.settle)
        page.mouse.move(0, 0)
        page.screenshot(path=out / "demo_reconstruct.png", full_page=True)

        page.get_by_role("tab", name="Search", exact=True).click()
        page.locator("#m3d-query input[type=file]").set_input_files(image)
        expect(page.locator("#m3d-gallery .thumbnail-item")).to_have_count(args.k,
                                                                            timeout=TIMEOUT_MS)
        time.sleep(1.0)
        page.mouse.move(0, 0)
        page.screenshot(path=out / "demo_search.png", full_page=True)
        browser.close()
    for name in ("demo_reconstruct.png", "demo_search.png"):
        print(out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
