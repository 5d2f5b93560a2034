"""The app in a real browser (headless Debian chromium driven by playwright): what first-time users do.

Two independent pages (separate browser contexts, like two visitors) prove that an enrollment belongs to
the visitor who made it, and that it survives a reload and a server restart (signed browser state). A
second server serves a tiny head trained here, whose training images are exact duplicates, with no data
folder on the server: the verdict shows the duplicate and the scores beside it, and the nearest examples
in words. No page fetches anything from another host. Screenshots of each step are saved under
``tests/artifacts/`` (gitignored) for a human to look at.
"""
from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

from conftest import REPO, make_image, spectra_head

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 120_000
GENERATOR = "Browser Gen"
LABEL = "browser_gen"

if not CHROMIUM.is_file():
    pytest.skip(f"no browser at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright python package is not installed")

from gradio_client import Client, handle_file  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from field_cases import photos as field_photos  # noqa: E402
from test_app import AppServer, dev_images, head_args, sample_images, synthetic_images  # noqa: E402


class Restartable:
    """An app server that can be restarted on the same port and home (browser storage is per origin)."""

    def __init__(self, factory) -> None:
        self.home = factory.mktemp("browser-home")
        self.args = head_args(self.home, factory)
        self.logs = factory.mktemp("logs")
        self.runs = 0
        self.srv = self._start(None)

    def _start(self, port: int | None) -> AppServer:
        self.runs += 1
        return AppServer(self.home, self.args, self.logs / f"app{self.runs}.log", port=port)

    @property
    def url(self) -> str:
        return self.srv.url

    def restart(self) -> None:
        self.stop()
        self.srv = self._start(self.srv.port)

    def stop(self) -> None:
        self.srv.stop()
        assert "Traceback" not in self.srv.output(), self.srv.output()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Restartable(tmp_path_factory)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as pw:
        try:
            chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        except Exception as exc:  # noqa: BLE001 - e.g. missing shared libraries
            pytest.skip(f"chromium does not start: {exc}")
        yield chromium
        chromium.close()


def open_page(browser, url: str):
    """A new visitor: a fresh browser context (own storage) on the app; requests to any other host are recorded
    (fonts included: the page needs no network)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.errors, page.elsewhere = [], []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.on("request", lambda req: page.elsewhere.append(req.url)
            if urlparse(req.url).scheme in ("http", "https") and urlparse(req.url).hostname != "127.0.0.1" else None)
    goto(page, url)
    return page


def goto(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("#attr-files")
    page.wait_for_function("document.querySelector('#head-banner')?.innerText.includes('knows')")


def _visitor(browser, server):
    """One visitor: a page in a browser context of its own (its own storage), closed without page errors and
    without having fetched anything from another host."""
    page = open_page(browser, server.url)
    yield page
    assert not page.errors, page.errors
    assert not page.elsewhere, page.elsewhere
    page.context.close()


page_a = pytest.fixture(_visitor, scope="module", name="page_a")
page_b = pytest.fixture(_visitor, scope="module", name="page_b")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, list[Path]]:
    folder = tmp_path_factory.mktemp("browser-images")
    return {"single": sample_images(folder, "stable_diffusion_v1", 1, seed=3),
            "batch": sample_images(folder, "real", 2, start=10, seed=4)
            + sample_images(folder, "stable_diffusion_v1", 1, start=10, seed=5),
            "enroll": synthetic_images(folder, "browser", 4, seed=600)}


def shot(page, name: str) -> None:
    page.wait_for_timeout(400)  # let transitions settle
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def text_of(page, selector: str) -> str:
    return page.locator(selector).inner_text()


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def wait_text(page, selector: str, text: str) -> None:
    page.wait_for_function(f"document.querySelector({selector!r})?.innerText.includes({text!r})")


def test_landing_page_explains_itself(page_a):
    text = page_a.inner_text("body")
    assert "Which generative model made this image?" in text
    for tab in ("Attribute", "Enroll", "Verify", "Zoo"):
        assert page_a.get_by_role("tab", name=tab).is_visible()
    # the system's own fonts (with their own bold), nothing to fetch: not a web font with two weights
    font = page_a.evaluate("getComputedStyle(document.querySelector('#head-banner strong, #head-banner')).fontFamily")
    assert font.startswith("system-ui"), font
    shot(page_a, "01_landing.png")


def upload(page, paths) -> None:
    """Choose files in the Attribute tab's upload box and wait until it lists them (and only them: a new upload
    replaces the previous one)."""
    page.locator("#attr-files input[type=file]").set_input_files([str(p) for p in paths])
    names = [Path(p).name for p in paths]
    page.wait_for_function("names => JSON.stringify([...document.querySelectorAll('#attr-files td.filename')]"
                           ".map(e => e.innerText.replace(/\\s+/g, ''))) === JSON.stringify(names)", arg=names)


def attribute(page, paths) -> None:
    upload(page, paths)
    page.click("#attr-button")
    if len(paths) == 1:
        wait_text(page, "#attr-verdict", Path(paths[0]).name)
    else:
        wait_text(page, "#attr-summary", f"{len(paths)} images")


def api_row(server, path: Path) -> dict:
    """The ``/attribute`` row of ``path`` (the page renders the same row)."""
    return Client(server.url, verbose=False).predict(handle_file(str(path)), api_name="/attribute")


def check_caveat(page, row: dict) -> None:
    """The measured caveat of a row is on the page whenever the library gives one."""
    if row.get("caveat"):
        assert row["caveat"]["text"] in text_of(page, "#attr-verdict").replace("\n", " ")


def details_text(page) -> str:
    """The collapsed details of a verdict, opened."""
    if not page.locator("#attr-details").is_visible():
        page.locator("#attr-details-box").get_by_text("Details:").click()
    page.locator("#attr-details").wait_for()
    return text_of(page, "#attr-details")


def test_attribute_one_image_shows_verdict(page_a, images, server):
    attribute(page_a, images["single"])
    verdict = text_of(page_a, "#attr-verdict")
    row = api_row(server, images["single"][0])
    assert images["single"][0].name in verdict and "Why:" in verdict and row["reason"] not in verdict
    deciding = row["reason"] in ("synthetic_unknown_generator", "unknown_score_above_threshold")
    assert ("Unknown score" in verdict) == deciding  # shown only where it decided
    check_caveat(page_a, row)
    nearest = text_of(page_a, "#attr-nearest")  # a fresh clone has no data folder: the examples in words
    assert "Most similar known examples" in nearest and "distance" in nearest
    assert row["pixel_sha256"] not in page_a.inner_text("body") and row["pixel_sha256"] in details_text(page_a)
    assert "Traceback" not in page_a.inner_text("body")
    shot(page_a, "02_attribute_one.png")


def test_a_real_photo_shows_no_unknown_score(page_a, server, tmp_path):
    """A photo the head was not trained on (the field cases' photos, none of them in dev) that it calls real."""
    photos = []
    for name, photo in field_photos().items():
        photo.save(tmp_path / f"{name}.png")
        photos.append(tmp_path / f"{name}.png")
    real = next((p for p in photos if api_row(server, p)["reason"] == "no_synthetic_evidence"), None)
    assert real is not None, "the served head calls none of the field-case photos real"
    attribute(page_a, [real])
    verdict = text_of(page_a, "#attr-verdict")
    assert "Real (not generated)" in verdict and "Synthetic score" in verdict and "Unknown score" not in verdict
    check_caveat(page_a, api_row(server, real))
    shot(page_a, "02b_attribute_real.png")


def test_attribute_batch_shows_a_readable_table_and_csv(page_a, images, tmp_path):
    page_a.click("#attr-clear")
    bad = tmp_path / "notes.png"
    bad.write_text("not really a png")
    small = make_image(tmp_path / "icon.png", seed=7, size=40)
    attribute(page_a, images["batch"] + [bad, small])  # chosen together: a batch
    table = text_of(page_a, "#attr-table")
    assert "notes.png" in table and "not a recognised image format" in table
    assert "not judged: too small" in table and "not judged: too small: 1" in text_of(page_a, "#attr-summary")
    assert "/tmp/" not in page_a.inner_text("body")
    assert not re.search(r"\b(no_synthetic_evidence|between_thresholds|synthetic_\w+_generator)\b", table)  # words
    # labels and headers are never broken inside a word nor clipped, and all rows show without scrolling the table
    if "stable_diffusion_v1" in table:
        assert "stable_diffusio\n" not in table
    headers = page_a.locator("#attr-table th span.header")
    assert headers.count() >= 4
    for i in range(headers.count()):
        assert headers.nth(i).evaluate("e => e.scrollWidth <= e.clientWidth + 1"), headers.nth(i).inner_text()
    box = page_a.locator("#attr-table").bounding_box()
    assert box["height"] > 5 * 30
    assert page_a.locator("#attr-csv").is_visible() and page_a.locator("#attr-batch-report").is_visible()
    shot(page_a, "03_attribute_batch.png")


def test_enroll_belongs_to_the_visitor_who_made_it(page_a, page_b, images):
    """Point 1: page A enrolls; page B (another visitor) never sees it."""
    open_tab(page_a, "Enroll")
    page_a.locator("#enroll-name textarea, #enroll-name input").first.fill(GENERATOR)
    page_a.locator("#enroll-files input[type=file]").set_input_files([str(p) for p in images["enroll"]])
    page_a.click("#enroll-button")
    wait_text(page_a, "#enroll-status", "Enrolled")
    status = text_of(page_a, "#enroll-status")
    assert LABEL in status and "Expected recall" in status and "Closest known class" in status
    wait_text(page_a, "#enrolled-table", LABEL)
    wait_text(page_a, "#head-banner", LABEL)
    shot(page_a, "04_enroll_page_a.png")
    goto(page_b, page_b.url)  # a reload of the other visitor's page
    assert LABEL not in text_of(page_b, "#head-banner")
    open_tab(page_b, "Enroll")
    assert LABEL not in text_of(page_b, "#enrolled-table")
    open_tab(page_b, "Verify")
    page_b.locator("#verify-model input").click()
    options = page_b.locator("ul[role=listbox] li").all_inner_texts()
    assert options and LABEL not in " ".join(options)
    page_b.keyboard.press("Escape")
    shot(page_b, "05_page_b_does_not_see_it.png")


def test_verify_shows_the_false_match_rate_at_the_score(page_a, images):
    open_tab(page_a, "Verify")
    assert not page_a.locator("#verify-table").is_visible()  # no placeholder headers before the first run
    box = page_a.locator("#verify-model input")
    box.click()
    box.fill(LABEL)
    page_a.locator("ul[role=listbox] li", has_text=LABEL).first.click()
    page_a.locator("#verify-files input[type=file]").set_input_files([str(images["enroll"][0])])
    page_a.click("#verify-button")
    page_a.wait_for_function("/\\b(Match|No match)\\b/.test(document.querySelector('#verify-summary')?.innerText || '')")
    summary = text_of(page_a, "#verify-summary")
    assert LABEL in summary and "false-match rate at this score" in summary and "operating false-match rate" in summary
    assert "Method: blackbox" in summary
    shot(page_a, "06_verify.png")


def test_verify_modes_explain_what_they_need(page_a):
    page_a.get_by_label("White-box: diffusers pipeline folder or Hub id").check()
    page_a.get_by_text("Calibration file").first.wait_for()
    assert not page_a.locator("#verify-model").is_visible()
    page_a.click("#verify-button")  # no pipeline given yet
    wait_text(page_a, "#verify-summary", "pipeline folder or Hub id")
    page_a.get_by_label("Saved verifier (OCC-CLIP...)").check()  # none saved in this zoo: the list is empty
    page_a.locator("#verify-saved").wait_for()
    page_a.click("#verify-button")
    wait_text(page_a, "#verify-summary", "choose a saved verifier")
    open_tab(page_a, "Zoo")  # the message stays in its tab: no toast over the others
    page_a.wait_for_timeout(500)
    assert not page_a.locator(".toast-body").count() and "choose a saved verifier" not in page_a.inner_text("body")
    open_tab(page_a, "Verify")
    page_a.get_by_label("Black-box: a class of the head").check()
    page_a.locator("#verify-model").wait_for()


def test_export_and_import_move_enrollments_to_another_browser(page_a, browser, server, tmp_path):
    open_tab(page_a, "Enroll")
    page_a.get_by_text("Keep or move your enrollments").click()
    with page_a.expect_download() as download:
        page_a.click("#enroll-export")
    archive = tmp_path / "mine.zip"
    download.value.save_as(archive)
    page_c = open_page(browser, server.url)  # a third visitor (or the same person in another browser)
    try:
        assert LABEL not in text_of(page_c, "#head-banner")
        open_tab(page_c, "Enroll")
        page_c.get_by_text("Keep or move your enrollments").click()
        page_c.locator("#enroll-import-file input[type=file]").set_input_files([str(archive)])
        page_c.click("#enroll-import")
        wait_text(page_c, "#enroll-status", "Imported")
        wait_text(page_c, "#head-banner", LABEL)
        shot(page_c, "07_imported.png")
    finally:
        page_c.context.close()


def test_enrollment_survives_reload_and_restart(page_a, page_b, server):
    """Point 1: the signed browser state brings the enrollment back after a reload and a server restart."""
    goto(page_a, page_a.url)
    wait_text(page_a, "#head-banner", LABEL)
    server.restart()
    goto(page_a, page_a.url)
    wait_text(page_a, "#head-banner", LABEL)
    assert "not loaded" not in text_of(page_a, "#head-banner")
    goto(page_b, page_b.url)
    assert LABEL not in text_of(page_b, "#head-banner")
    shot(page_a, "08_after_restart.png")


def test_tampered_browser_state_is_refused_with_a_notice(browser, server):
    page = open_page(browser, server.url)
    try:
        page.evaluate("localStorage.setItem('attribution-enrollments-v1', 'not what the server wrote')")
        goto(page, server.url)  # undecryptable storage is simply empty
        assert LABEL not in text_of(page, "#head-banner")
    finally:
        page.context.close()


def test_remove_asks_first_and_touches_only_your_own(page_a):
    open_tab(page_a, "Enroll")
    wait_text(page_a, "#enrolled-table", LABEL)
    page_a.click("#remove-button")
    wait_text(page_a, "#remove-confirm", "cannot be undone")
    page_a.click("#remove-no")  # first: keep it
    page_a.wait_for_timeout(500)
    assert LABEL in text_of(page_a, "#enrolled-table")
    page_a.click("#remove-button")
    wait_text(page_a, "#remove-confirm", LABEL)
    shot(page_a, "09_remove_confirm.png")
    page_a.click("#remove-yes")
    wait_text(page_a, "#enroll-status", "Removed")
    page_a.wait_for_function(f"!document.querySelector('#head-banner').innerText.includes('{LABEL}')")
    goto(page_a, page_a.url)
    assert LABEL not in text_of(page_a, "#head-banner")


def test_zoo_tab_shows_the_served_head_read_only(page_a):
    open_tab(page_a, "Zoo")
    wait_text(page_a, "#zoo-info", "Served head")
    info = text_of(page_a, "#zoo-info")
    assert "Backbone" in info and "Classes" in info and "_called_" not in info  # no raw metrics here
    assert "shipped" in text_of(page_a, "#zoo-list") or "user" in text_of(page_a, "#zoo-list")
    assert not page_a.locator("#zoo-admin").count()  # no admin token: no operator controls
    body = page_a.inner_text("body")
    assert "/work/" not in body and "/tmp/" not in body
    # the model card a person reads: summary and headline first, in the page (no scroll box), raw metrics folded
    wait_text(page_a, "#zoo-card", "What it is good and bad at")
    card = text_of(page_a, "#zoo-card")
    assert card.index("What it is good and bad at") < card.index("Headline figures") < card.index("Classes")
    assert page_a.locator("#zoo-card").evaluate("e => e.scrollHeight <= e.clientHeight + 2")
    raw = page_a.locator("#zoo-card details")
    if raw.count():  # folded, the raw metrics inside it
        assert not raw.first.evaluate("e => e.open") and not page_a.locator("#zoo-card pre").first.is_visible()
    shot(page_a, "10_zoo.png")
    assert page_a.evaluate("document.body.scrollHeight") < 4000  # not thousands of px of raw metrics


# ----------------------------------------------------------------------------- a head whose images are duplicates
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A head on the weight-free residual spectra trained here (as in test_evidence), served from a user zoo
    without its data folder (as on a fresh clone: no pictures of known examples, only their names)."""
    root = tmp_path_factory.mktemp("tiny")
    head = root / "home" / "zoo" / "tiny-head"
    shutil.copytree(spectra_head(root), head)  # its recorded data folder (../data) is not beside the copy
    srv = AppServer(root / "home", ["--zoo", "tiny-head"], root / "app.log")
    yield {"server": srv, "head": head, "data": root / "data"}
    srv.stop()
    assert "Traceback" not in srv.output(), srv.output()


@pytest.fixture(scope="module")
def page_t(browser, tiny):
    yield from _visitor(browser, tiny["server"])


def test_an_exact_training_image_shows_its_duplicate_and_the_scores_beside_it(page_t, tiny):
    """The duplicate decides the label; the pixels' own answer, which disagrees, is on the page too (collapsed,
    said to have decided nothing); the nearest examples are listed in words, without the image itself."""
    candidates = sorted((tiny["data"] / "real").glob("*.png"))
    rows = {p: api_row(tiny["server"], p) for p in candidates[:6]}
    assert all(r["reason"] == "exact_known_image" and r["duplicate_of"]["match"] == "exact" for r in rows.values())
    image = next((p for p, r in rows.items() if r["synthetic_score"] >= r["real_threshold"]), candidates[0])
    row = rows[image]
    attribute(page_t, [image])
    verdict = text_of(page_t, "#attr-verdict")
    assert "Known image: real" in verdict and f"This exact image (the same decoded pixels) is in the head's " \
        f"training set as real: {image.name}" in verdict
    assert "Synthetic score" not in verdict and "Unknown score" not in verdict
    check_caveat(page_t, row)
    details = details_text(page_t)
    assert "synthetic score" in details and "did not decide this verdict" in details
    nearest = text_of(page_t, "#attr-nearest")
    assert "distance" in nearest and f"{image.name} (distance 0.00)" not in nearest  # the duplicate, not a neighbour
    assert "Pictures of known examples are shown only where" in nearest  # no data folder on this server
    assert not page_t.locator("#attr-nearest-gallery").is_visible()
    shot(page_t, "11_exact_duplicate.png")


def test_the_report_downloads_with_the_verdict_sha256_and_revision(page_t, tiny, browser, tmp_path):
    from attribution import Attributor
    from attribution.report import HeadInfo

    image = tiny["data"] / "gen_a" / "100.png"
    attribute(page_t, [image])
    with page_t.expect_download() as download:
        page_t.click("#attr-report")
    path = tmp_path / download.value.suggested_filename
    download.value.save_as(path)
    report = path.read_text()
    assert path.name == "report-100.html" and "http" not in report.lower()
    revision = HeadInfo.of(Attributor.from_pretrained(tiny["head"])).revision
    for expected in ("Known image: gen_a", api_row(tiny["server"], image)["pixel_sha256"], revision, "100.png"):
        assert expected in report, expected
    assert str(tiny["data"]) not in report and "/tmp/" not in report  # the visitor's file name, no server path
    viewer = browser.new_page(viewport={"width": 1100, "height": 900})
    try:
        viewer.goto(path.as_uri())
        viewer.screenshot(path=str(ARTIFACTS / "12_report.png"), full_page=True)
    finally:
        viewer.close()


def test_a_second_upload_replaces_the_first(page_t, tiny):
    first, second = tiny["data"] / "gen_b" / "200.png", tiny["data"] / "gen_b" / "201.png"
    upload(page_t, [first])
    upload(page_t, [second])  # no Clear in between: the box lists the second only
    page_t.click("#attr-button")
    wait_text(page_t, "#attr-verdict", "201.png")
    assert not page_t.locator("#attr-table").is_visible()  # one verdict, not a table of two
    shot(page_t, "13_second_upload.png")


def test_a_too_small_image_is_not_judged_rather_than_unreadable(page_t, tmp_path):
    attribute(page_t, [make_image(tmp_path / "tiny-icon.png", seed=8, size=40)])
    verdict = text_of(page_t, "#attr-verdict")
    assert "Not judged: too small" in verdict and "Could not read" not in verdict and "40x40 px" in verdict
    shot(page_t, "14_too_small.png")
