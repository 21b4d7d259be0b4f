"""A person's visit, in headless Chromium: upload a photo, read the answer, click a gallery image."""

import shutil
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# Without these, Chromium keeps trying to reach Google's servers from this offline machine.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_upload_then_click_a_gallery_image(server, photo_paths):
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "install Debian's chromium: apt-get install -y chromium"
    url, state_dir = server
    photo = next(p for p in photo_paths if "container_ship" in p.name)
    SCREENSHOTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1500})
            page.goto(url, wait_until="load")
            page.locator("input[type=file]").first.wait_for(state="attached", timeout=60_000)
            page.locator("input[type=file]").first.set_input_files(str(photo))
            page.wait_for_function(
                "document.querySelector('#verdict') && /looks like|Sorry/.test(document.querySelector('#verdict').innerText)",
                timeout=90_000,
            )
            verdict = page.locator("#verdict").inner_text()
            thumbnails = page.locator("#gallery button.thumbnail-item")
            thumbnails.first.wait_for(timeout=30_000)
            assert thumbnails.count() == 4
            caption = page.locator("#gallery .caption-label").nth(1).inner_text()
            thumbnails.nth(1).click()
            page.wait_for_function(
                "/your label is/.test(document.querySelector('#relabel-note').innerText)", timeout=30_000
            )
            note = page.locator("#relabel-note").inner_text()
            screenshot = SCREENSHOTS / "browser-upload-and-relabel.png"
            page.screenshot(path=str(screenshot), full_page=True)
            print(f"\nscreenshot: {screenshot}")
        finally:
            browser.close()
    assert "looks like" in verdict or "Sorry" in verdict
    assert f"your label is {caption.rsplit(' (', 1)[0]}" in note
    assert list((state_dir / "feedback").rglob("*.png"))


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
