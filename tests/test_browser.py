"""The app in a real browser (headless Debian chromium driven by playwright): what first-time users do.

Two independent pages (separate browser contexts, like two visitors) prove that an enrollment belongs to
the visitor who made it, and that it survives a reload and a server restart (signed browser state).
Screenshots of each step are saved under ``tests/artifacts/`` (gitignored) for a human to look at.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO

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

from test_app import AppServer, head_args, sample_images, synthetic_images  # noqa: E402


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
    """A new visitor: a fresh browser context (own storage) on the app."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    goto(page, url)
    return page


def goto(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("#attr-files")
    page.wait_for_function("document.querySelector('#head-banner')?.innerText.includes('knows')")


def _visitor(browser, server):
    """One visitor: a page in a browser context of its own (its own storage), closed without page errors."""
    page = open_page(browser, server.url)
    yield page
    assert not page.errors, page.errors
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
    shot(page_a, "01_landing.png")


def test_attribute_one_image_shows_verdict(page_a, images):
    page_a.locator("#attr-files input[type=file]").set_input_files([str(images["single"][0])])
    page_a.click("#attr-button")
    wait_text(page_a, "#attr-verdict", "Verdict")
    verdict = text_of(page_a, "#attr-verdict")
    assert "Verdict:" in verdict and images["single"][0].name in verdict and "Unknown score" in verdict
    assert "Traceback" not in page_a.inner_text("body")
    shot(page_a, "02_attribute_one.png")


def test_attribute_batch_shows_a_readable_table_and_csv(page_a, images, tmp_path):
    page_a.click("#attr-clear")
    bad = tmp_path / "notes.png"
    bad.write_text("not really a png")
    page_a.locator("#attr-files input[type=file]").set_input_files([str(p) for p in images["batch"]] + [str(bad)])
    page_a.click("#attr-button")
    wait_text(page_a, "#attr-summary", "4 images")
    table = text_of(page_a, "#attr-table")
    assert "notes.png" in table and "not a recognised image format" in table
    assert "/tmp/" not in page_a.inner_text("body")
    # labels are never broken inside a word, and all four rows show without scrolling the table
    if "stable_diffusion_v1" in table:
        assert "stable_diffusio\n" not in table
    box = page_a.locator("#attr-table").bounding_box()
    assert box["height"] > 4 * 30
    assert page_a.locator("#attr-csv").is_visible()
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
    for close in page_a.locator(".toast-close").all():
        close.click()
    page_a.get_by_label("Saved verifier (OCC-CLIP...)").check()  # none saved in this zoo: the list is empty
    page_a.locator("#verify-saved").wait_for()
    page_a.click("#verify-button")
    wait_text(page_a, "#verify-summary", "choose a saved verifier")
    for close in page_a.locator(".toast-close").all():
        close.click()
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
    assert "Backbone" in info and "Classes" in info
    assert "shipped" in text_of(page_a, "#zoo-list") or "user" in text_of(page_a, "#zoo-list")
    assert not page_a.locator("#zoo-admin").count()  # no admin token: no operator controls
    body = page_a.inner_text("body")
    assert "/work/" not in body and "/tmp/" not in body
    shot(page_a, "10_zoo.png")
