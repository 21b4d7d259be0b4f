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


def test_a_reviewer_works_through_the_learning_pictures(tmp_path, monkeypatch, example_photos):
    """The admin's Review tab: the pictures themselves with their proposed labels, a filter by
    class, one picture selected by a click and accepted, the rest of the page rejected at once."""
    import json
    import sqlite3
    import urllib.request

    from playwright.sync_api import sync_playwright

    from bench.app_server import running_app
    from tests.app.conftest import ASSETS

    monkeypatch.setenv("HONEST_ADMIN_PASSWORD", "a reviewer's password")
    state = tmp_path / "state"
    votes = {"container_ship": "ship", "Siamese_cat": "cat", "pug": "dog", "airliner": "airplane"}
    with running_app(ASSETS, state, extra_args=("--rate-limit", "0")) as (url, _):
        for index, (photo, label) in enumerate(votes.items()):
            visitor = {"X-Forwarded-For": f"203.0.113.{60 + index}"}
            request = urllib.request.Request(url + "api/v1/classify", data=example_photos[photo].read_bytes(),
                                             headers={"Content-Type": "image/jpeg", **visitor})
            token = json.loads(urllib.request.urlopen(request, timeout=60).read())["token"]
            request = urllib.request.Request(url + "api/v1/corrections", data=json.dumps({"token": token, "label": label}).encode(),
                                             headers={"Content-Type": "application/json", **visitor})
            urllib.request.urlopen(request, timeout=60).read()
        admin = f"http://127.0.0.1:{(state / 'admin.port').read_text()}/"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1400})
                page.goto(admin, wait_until="load")
                page.locator("input[type=text]").first.fill("admin")
                page.locator("input[type=password]").first.fill("a reviewer's password")
                page.get_by_role("button", name="Login").click()
                page.get_by_role("tab", name="Review").click()
                gallery = page.locator("#review-gallery button.thumbnail-item")
                gallery.nth(len(votes) - 1).wait_for(timeout=60_000)
                shown_at_first = gallery.count()  # the visitors' votes, and the fallback's sure answers
                # Only the visitors' cats.
                page.get_by_label("Source").click()
                page.get_by_role("option", name="visitor", exact=True).click()
                page.get_by_label("Proposed class").click()
                page.get_by_role("option", name="cat", exact=True).click()
                page.get_by_role("button", name="Show", exact=True).click()
                page.wait_for_function("document.querySelectorAll('#review-gallery button.thumbnail-item').length === 1",
                                       timeout=30_000)
                captions = page.locator("#review-gallery .caption-label").all_inner_texts()
                gallery.first.click()
                page.locator("#review-selected input[type=checkbox]:checked").first.wait_for(timeout=30_000)
                page.get_by_role("button", name="Accept selected").click()
                page.wait_for_function("/1 accepted/.test(document.querySelector('#review-outcome').innerText)", timeout=30_000)
                # Back to every class: the three others, rejected in one go.
                page.get_by_label("Proposed class").click()
                page.get_by_role("option", name="all", exact=True).click()
                page.get_by_role("button", name="Show", exact=True).click()
                page.wait_for_function(f"document.querySelectorAll('#review-gallery button.thumbnail-item').length === {len(votes) - 1}",
                                       timeout=30_000)
                page.screenshot(path=str(SCREENSHOTS / "browser-review.png"), full_page=True)
                page.get_by_role("button", name="Reject all shown").click()
                page.wait_for_function(f"/{len(votes) - 1} rejected/.test(document.querySelector('#review-outcome').innerText)",
                                       timeout=30_000)
            finally:
                browser.close()
    assert shown_at_first >= len(votes)
    assert len(captions) == 1 and captions[0].split()[1] == "cat" and "from visitor" in captions[0], captions
    with sqlite3.connect(state / "corrections.sqlite") as database:
        statuses = dict(database.execute("SELECT label, status FROM votes WHERE source = 'visitor'").fetchall())
    assert statuses == {"cat": "accepted", "ship": "rejected", "dog": "rejected", "airplane": "rejected"}, statuses
