"""A person's visit, in headless Chromium: upload a photo, read the answer, click a gallery image."""

import re
import shutil
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# Without these, Chromium keeps trying to reach Google's servers from this offline machine.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VEILS = ", ".join(f"#{name} [data-testid=status-tracker]" for name in ("verdict", "shares", "gallery"))


def test_upload_then_click_a_gallery_image(server, example_photos):
    import sqlite3

    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "install Debian's chromium: apt-get install -y chromium"
    url, state_dir = server
    SCREENSHOTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1500})
            page.goto(url, wait_until="load")
            page.locator("input[type=file]").first.wait_for(state="attached", timeout=60_000)
            page.locator("input[type=file]").first.set_input_files(str(example_photos["container_ship"]))
            page.wait_for_function(
                "document.querySelector('#verdict') && /looks like|Sorry|Not sure/.test(document.querySelector('#verdict').innerText)",
                timeout=90_000,
            )
            thumbnails = page.locator("#gallery button.thumbnail-item")
            thumbnails.first.wait_for(timeout=30_000)
            page.locator("#shares .confidence-set").first.wait_for(timeout=30_000)
            # Before the picture is taken: every thumbnail has loaded, and the "working" veils over
            # the outputs have faded out (they hide with a transition after the answer arrives).
            page.wait_for_function("[...document.querySelectorAll('#gallery img')].every(i => i.complete && i.naturalWidth > 0)",
                                   timeout=30_000)
            page.wait_for_function(f"[...document.querySelectorAll('{VEILS}')].every(e => getComputedStyle(e).opacity === '0')",
                                   timeout=30_000)
            verdict = page.locator("#verdict").inner_text()
            bars = page.locator("#shares .confidence-set dt").all_inner_texts()
            captions = page.locator("#gallery .caption-label").all_inner_texts()
            hood_open = page.locator("#hood [data-testid=accordion-content]").is_visible()
            answer_shot = SCREENSHOTS / "browser-answer.png"
            page.screenshot(path=str(answer_shot), full_page=True)
            print(f"\nscreenshot: {answer_shot}")
            thumbnails.nth(1).click()
            page.wait_for_function(
                "/your label is/.test(document.querySelector('#relabel-note').innerText)", timeout=30_000
            )
            note = page.locator("#relabel-note").inner_text()
            screenshot = SCREENSHOTS / "browser-upload-and-relabel.png"
            page.screenshot(path=str(screenshot), full_page=True)
            print(f"screenshot: {screenshot}")
        finally:
            browser.close()
    # One story on the screenshot: the verdict's class is the top bar and the first gallery picture.
    answer = re.search(r"This looks like: (.+?) \(", verdict)
    assert answer, verdict
    assert answer.group(1) == "ship" == bars[0] == captions[0], (verdict, bars, captions)
    assert len(bars) == 3 and len(captions) == 4 and len(set(captions)) == 4, (bars, captions)
    assert not hood_open, "Under the hood starts closed"
    assert f"your label is {captions[1]}" in note
    with sqlite3.connect(state_dir / "corrections.sqlite") as database:
        labels = [row[0] for row in database.execute("SELECT label FROM votes WHERE status = 'pending'")]
    assert captions[1].replace(" ", "_") in labels


def test_model_tab_shows_the_error_analysis(server):
    from playwright.sync_api import sync_playwright

    url, _ = server
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1500})
            page.goto(url, wait_until="load")
            page.get_by_role("tab", name="Model").click()
            page.get_by_text("Error analysis", exact=True).wait_for(timeout=30_000)
            text = page.locator("body").inner_text()
            for caption in ("K-Means clusters", "DBSCAN clusters", "feature maps of one test image", "first convolution's filters", "Model ladder"):
                assert caption in text, caption
            # Every figure of the tab is an image the browser could load, not a broken link.
            page.wait_for_function("[...document.querySelectorAll('img')].filter(i => i.complete && i.naturalWidth > 0).length >= 9",
                                   timeout=30_000)
            screenshot = SCREENSHOTS / "browser-model-tab.png"
            page.screenshot(path=str(screenshot), full_page=True)
            print(f"\nscreenshot: {screenshot}")
        finally:
            browser.close()
