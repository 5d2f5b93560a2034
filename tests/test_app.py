"""The Gradio app: a real server (``python app.py``) driven by ``gradio_client``, plus in-process checks.

The server runs in a subprocess with its own ``ATTRIBUTION_HOME`` (so the user zoo starts empty), on a
free port of 127.0.0.1, without an admin token: the operator's zoo is read-only from the web, and what
one client enrolls is seen by that client only.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import DEV_DATA, REPO, make_image

pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

DEFAULT_HEAD = REPO / "zoo" / "open-set-efficientnet-lite2"
FALLBACK_NAME = "test-head"
SECRET = "test-secret-for-signed-enrollments"
START_TIMEOUT = 240


# ----------------------------------------------------------------------------- helpers (also used by test_browser)
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dev_images(cls: str, n: int, start: int = 0) -> list[Path]:
    folder = DEV_DATA / cls
    files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    return files[start:start + n]


def sample_images(folder: Path, cls: str, n: int, start: int = 0, seed: int = 0) -> list[Path]:
    """``n`` images of dev class ``cls`` when the dev data is here, else synthetic ones (same seed -> same pixels)."""
    files = dev_images(cls, n, start)
    if len(files) == n:
        return files
    folder.mkdir(parents=True, exist_ok=True)
    return [make_image(folder / f"{cls}_{start + i}.png", seed=seed * 1000 + start + i, size=256) for i in range(n)]


def synthetic_images(folder: Path, prefix: str, n: int, seed: int) -> list[Path]:
    """Textured images unlike any dev class: a made-up generator the head calls unknown."""
    folder.mkdir(parents=True, exist_ok=True)
    return [make_image(folder / f"{prefix}_{i}.png", seed=seed + i, size=256) for i in range(n)]


def _build_fallback_head(root: Path) -> Path:
    """A small head trained here when the shipped default head is not available (takes ~1 min)."""
    data = root / "data"
    for k, cls in enumerate(("real", "gen_a", "gen_b")):
        for i in range(8):
            (data / cls).mkdir(parents=True, exist_ok=True)
            make_image(data / cls / f"{i}.png", seed=100 * k + i, size=256)
    out = root / FALLBACK_NAME
    subprocess.run([sys.executable, "-m", "attribution", "train", "--data", str(data), "--out", str(out),
                    "--crops", "1", "--n-components", "16", "--quiet"], cwd=REPO, check=True, timeout=600,
                   capture_output=True)
    return out


def head_folder(factory) -> Path:
    """The shipped default head, or a small one trained once per session when it is missing."""
    if (DEFAULT_HEAD / "config.json").is_file():
        return DEFAULT_HEAD
    built = factory.getbasetemp() / "fallback-head" / FALLBACK_NAME
    if not (built / "config.json").is_file():
        _build_fallback_head(built.parent)
    return built


def head_args(home: Path, factory) -> list[str]:
    """``app.py`` arguments selecting the head: the default one, or a fallback copied into ``home``'s user zoo."""
    folder = head_folder(factory)
    if folder == DEFAULT_HEAD:
        return []
    shutil.copytree(folder, home / "zoo" / FALLBACK_NAME, dirs_exist_ok=True)
    return ["--zoo", FALLBACK_NAME]


class AppServer:
    """``python app.py`` in a subprocess, on 127.0.0.1 (a free port unless given), with its own ATTRIBUTION_HOME."""

    def __init__(self, home: Path, args: list[str], log: Path, port: int | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = log
        self.home = home
        full_env = {**os.environ, "ATTRIBUTION_HOME": str(home), "GRADIO_SERVER_NAME": "127.0.0.1",
                    "GRADIO_SERVER_PORT": str(self.port), "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
                    "PYTHONUNBUFFERED": "1", "ATTRIBUTION_SECRET": SECRET, "OMP_NUM_THREADS": "1", **(env or {})}
        for name in ("ATTRIBUTION_SHARE", "HF_TOKEN", "ATTRIBUTION_ADMIN_TOKEN", "ATTRIBUTION_ZOO"):
            if name not in (env or {}):
                full_env.pop(name, None)
        self._log_fh = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, "app.py", *args], cwd=REPO, env=full_env, stdout=self._log_fh,
                                     stderr=subprocess.STDOUT)
        self._wait()

    def _wait(self) -> None:
        import httpx

        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app.py exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx.get(self.url + "gradio_api/info", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"app.py did not answer within {START_TIMEOUT} s:\n{self.output()}")

    def output(self) -> str:
        if not self._log_fh.closed:
            self._log_fh.flush()
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log_fh.close()


def assert_no_server_path(obj, *roots: Path) -> None:
    """No string in ``obj`` names a server folder (the repo, the app's home, the temp dir) or any absolute path."""
    text = json.dumps(obj) if not isinstance(obj, str) else obj
    for root in (REPO, *roots, Path(tempfile.gettempdir())):
        assert str(root) not in text, (root, text[:500])
    assert "/tmp/" not in text and "/gradio/" not in text, text[:500]


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def app_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("app-home")


@pytest.fixture(scope="module")
def server(app_home, tmp_path_factory):
    srv = AppServer(app_home, head_args(app_home, tmp_path_factory), tmp_path_factory.mktemp("logs") / "app.log")
    yield srv
    srv.stop()
    assert "Traceback" not in srv.output(), srv.output()


@pytest.fixture(scope="module")
def client(server) -> Client:
    return Client(server.url, verbose=False)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, list[Path]]:
    folder = tmp_path_factory.mktemp("images")
    return {"real": sample_images(folder, "real", 1, seed=1),
            "mine": synthetic_images(folder, "mine", 6, seed=300),
            "gen_a": synthetic_images(folder, "a", 4, seed=400),
            "gen_b": synthetic_images(folder, "b", 4, seed=500)}


def labels_seen(client: Client, image: Path) -> set[str]:
    return set(client.predict(handle_file(str(image)), api_name="/attribute")["scores"])


# ----------------------------------------------------------------------------- tests through the server
def test_api_lists_three_named_endpoints(client):
    api = client.view_api(print_info=False, return_format="dict")
    assert set(api["named_endpoints"]) == {"/attribute", "/enroll", "/verify"}
    params = {name: [p["parameter_name"] for p in info["parameters"]] for name, info in api["named_endpoints"].items()}
    assert params == {"/attribute": ["image"], "/enroll": ["name", "images", "force"], "/verify": ["model", "image"]}


def test_attribute_returns_the_cli_object_except_file(client, images, app_home):
    """Point 5: ``/attribute`` is the CLI ``predict`` row; only ``file`` differs (the client's name, no server path)."""
    path = images["real"][0]
    web = client.predict(handle_file(str(path)), api_name="/attribute")
    proc = subprocess.run([sys.executable, "-m", "attribution", "predict", "--json", "--quiet", str(path)],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "ATTRIBUTION_HOME": str(app_home), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    cli = json.loads(proc.stdout.splitlines()[0])
    assert cli["file"] == str(path.resolve()) and web["file"] == path.name
    assert {k: v for k, v in web.items() if k != "file"} == {k: v for k, v in cli.items() if k != "file"}
    assert_no_server_path(web, app_home)


def test_twenty_concurrent_attribute_requests(server, tmp_path):
    """20 clients at once: every request is answered, none fails (the queue holds them, bounded at 64)."""
    paths = [make_image(tmp_path / f"c{i}.png", seed=700 + i, size=256) for i in range(20)]

    def one(path):
        return Client(server.url, verbose=False).predict(handle_file(str(path)), api_name="/attribute")

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, paths))
    assert all("error" not in r and r["label"] for r in results)
    assert sorted(r["file"] for r in results) == sorted(p.name for p in paths)


def test_enroll_then_verify_in_one_client_session(server, images, app_home):
    """The README's ``/enroll`` -> ``/verify`` example: one Client is one session (point 1); verify speaks a
    human scale (point 4); enrollment reports how separable the generator is (point 3)."""
    client = Client(server.url, verbose=False)
    files = [handle_file(str(p)) for p in images["mine"][:5]]
    result = client.predict("Test Gen 1", files, api_name="/enroll")
    assert result["name"] == "test_gen_1" and result["n_images"] == 5 and "test_gen_1" in result["classes"]
    assert result["errors"] == {} and result["saved_to"] is None  # nothing is written on the server
    assert 0 <= result["expected_recall"] <= 1 and result["closest_class"] in result["classes"]
    assert 0 < result["closest_class_share"] <= 1 and "warning" not in result
    out = client.predict(handle_file(str(images["mine"][0])), api_name="/attribute")
    assert out["label"] == "test_gen_1"  # an enrollment image is attributed to its new class
    ver = client.predict("test_gen_1", handle_file(str(images["mine"][5])), api_name="/verify")
    assert set(ver) >= {"file", "model", "score", "match", "threshold", "false_match_rate", "method",
                        "false_match_rate_at_score"}
    assert ver["match"] == (ver["score"] > 0) and ver["threshold"] == 0.0 and ver["false_match_rate"] == 0.01
    assert 0 < ver["false_match_rate_at_score"] <= 1 and ver["method"] == "blackbox"
    matched = set()
    for path in [images["mine"][5], *images["gen_a"], *images["real"]]:  # Attribute and Verify agree (one session)
        ver = client.predict("test_gen_1", handle_file(str(path)), api_name="/verify")
        matched.add(ver["match"])
        row = client.predict(handle_file(str(path)), api_name="/attribute")
        if ver["match"]:  # a match makes it synthetic; the class furthest above its threshold is named
            assert row["label"] != "real" and row.get("class_match"), (path.name, row)
            if row["class_match"]["class"] == "test_gen_1":
                assert row["class_match"]["score"] - row["class_match"]["threshold"] == pytest.approx(ver["score"],
                                                                                                      abs=1e-4)
        else:
            assert (row.get("class_match") or {}).get("class") != "test_gen_1", (path.name, row)
    assert matched == {True, False}  # both sides of the agreement were seen
    with pytest.raises(Exception, match="already known"):
        client.predict("Test Gen 1", files, api_name="/enroll")
    assert_no_server_path([result, out, ver], app_home)


def test_two_clients_enroll_at_once_and_each_sees_only_its_own(server, images):
    """Point 1's concurrency test: two clients enroll different generators at the same time; each sees only its
    own, a third client sees neither."""
    clients = {"gen_a": Client(server.url, verbose=False), "gen_b": Client(server.url, verbose=False)}

    def enroll(label):
        return clients[label].predict(label, [handle_file(str(p)) for p in images[label][:3]], api_name="/enroll")

    with ThreadPoolExecutor(2) as pool:
        results = dict(zip(clients, pool.map(enroll, clients)))
    assert results["gen_a"]["name"] == "gen_a" and "gen_b" not in results["gen_a"]["classes"]
    assert results["gen_b"]["name"] == "gen_b" and "gen_a" not in results["gen_b"]["classes"]
    probe = images["gen_a"][3]
    assert labels_seen(clients["gen_a"], probe) >= {"gen_a"} and "gen_b" not in labels_seen(clients["gen_a"], probe)
    assert "gen_a" not in labels_seen(clients["gen_b"], probe) and "gen_b" in labels_seen(clients["gen_b"], probe)
    third = Client(server.url, verbose=False)
    assert not {"gen_a", "gen_b", "test_gen_1"} & labels_seen(third, probe)
    with pytest.raises(Exception, match="unknown model 'gen_a'"):
        third.predict("gen_a", handle_file(str(probe)), api_name="/verify")
    with pytest.raises(Exception, match="unknown model 'gen_b'"):
        clients["gen_a"].predict("gen_b", handle_file(str(probe)), api_name="/verify")


def test_copy_of_a_known_class_is_refused_unless_forced(server):
    """Point 3: five vqgan_clip images enrolled as ``my_gen`` warn before anything is kept."""
    files = dev_images("vqgan_clip", 5, start=40)
    if len(files) < 5:
        pytest.skip("needs the dev data")
    client = Client(server.url, verbose=False)
    with pytest.raises(Exception, match="not enrolled: .*'vqgan_clip'.*force=True"):
        client.predict("my_gen", [handle_file(str(p)) for p in files], api_name="/enroll")
    assert "my_gen" not in labels_seen(client, files[0])
    forced = client.predict("my_gen", [handle_file(str(p)) for p in files], True, api_name="/enroll")
    assert forced["closest_class"] == "vqgan_clip" and forced["closest_class_share"] >= 0.5
    assert "vqgan_clip" in forced["warning"] and forced["expected_recall"] < 0.5


def test_bad_uploads_give_clear_errors_without_server_paths(client, images, tmp_path, app_home):
    text = tmp_path / "notes.txt"
    text.write_text("this is not an image")
    messages = []
    for args, api_name, match in [
            ((handle_file(str(text)),), "/attribute", "notes.txt: not a recognised image format"),
            (("too few", [handle_file(str(p)) for p in images["mine"][:2]]), "/enroll", "at least 3"),
            (("!!!", [handle_file(str(p)) for p in images["mine"][:3]]), "/enroll", "invalid generator name"),
            (("x", [handle_file(str(text))] * 3), "/enroll", "at least 3 readable images"),
            (("no_such_generator", handle_file(str(images["real"][0]))), "/verify", "unknown model")]:
        with pytest.raises(Exception, match=match) as info:
            client.predict(*args, api_name=api_name)
        messages.append(str(info.value))
    assert_no_server_path(messages, app_home)
    assert client.predict(handle_file(str(images["real"][0])), api_name="/attribute")["label"]  # still fine


def test_web_enrollments_never_write_to_the_operator_zoo(server, app_home):
    heads = [p for p in (app_home / "zoo").iterdir() if not p.name.startswith(".")] \
        if (app_home / "zoo").is_dir() else []
    assert all(p.name == FALLBACK_NAME for p in heads), heads


# ----------------------------------------------------------------------------- in-process checks
@pytest.fixture(scope="module")
def app_module():
    sys.path.insert(0, str(REPO))
    import app

    return app


def test_app_py_only_builds_the_demo(app_module):
    import gradio as gr

    assert isinstance(app_module.demo, gr.Blocks) and not app_module.demo.is_running
    source = (REPO / "app.py").read_text()
    assert "def " not in source.replace("def main", "")  # callbacks live in the attribution_app package


def test_zip_uploads_are_unpacked_safely(tmp_path):
    from attribution_app.uploads import cleanup, expand_uploads

    archive = tmp_path / "batch.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(make_image(tmp_path / "a.png", seed=1), "a.png")
        zf.write(make_image(tmp_path / "b.jpg", seed=2, fmt="JPEG"), "sub/b.jpg")
        zf.writestr("../../evil.png", (tmp_path / "a.png").read_bytes())
        zf.writestr("readme.txt", "not an image")
        zf.writestr("__MACOSX/._a.png", "resource fork")
    upload = {"path": str(tmp_path / "a.png"), "orig_name": "holiday photo.png"}
    items, notes, tmp = expand_uploads([str(archive), upload], limit=10)
    try:
        names = [n for n, _ in items]
        assert names == ["batch.zip/a.png", "batch.zip/sub/b.jpg", "batch.zip/../../evil.png", "holiday photo.png"]
        for _, path in items[:3]:
            assert Path(path).parent == Path(tmp[0])  # never outside the temporary folder
        assert any("skipped 1" in n for n in notes)
    finally:
        cleanup(tmp)
    assert not Path(tmp[0]).exists()
    with pytest.raises(ValueError, match="too many images"):
        expand_uploads([str(archive)], limit=2)
    (tmp_path / "bad.zip").write_text("not a zip")
    with pytest.raises(ValueError, match="not a readable zip"):
        expand_uploads([str(tmp_path / "bad.zip")], limit=10)


def test_a_new_upload_replaces_the_previous_one_whatever_runs_first():
    """The file box appends an upload to what it held; the tab keeps the latest upload only, whether the Attribute
    click reaches the server before the upload's own event has run, after, or in between (its result not yet
    back in the box)."""
    from attribution_app.tabs.attribute import fresh_upload

    assert fresh_upload(["old.png", "new.png"], ["old.png"]) == (["new.png"], ["new.png"])  # before
    assert fresh_upload(["new.png"], ["new.png"]) == (["new.png"], ["new.png"])  # after
    assert fresh_upload(["old.png", "new.png"], ["new.png"]) == (["new.png"], ["new.png"])  # in between
    assert fresh_upload(["a.png", "b.png", "c.png"], ["a.png", "b.png"]) == (["c.png"], ["c.png"])
    assert fresh_upload(["a.png", "b.png"], []) == (["a.png", "b.png"], ["a.png", "b.png"])  # chosen together
    assert fresh_upload(["a.png"], ["a.png", "b.png"]) == (["a.png"], ["a.png"])  # one removed by hand


def test_one_error_decorator_hides_traces_and_server_paths(caplog):
    import gradio as gr

    from attribution_app.errors import guard, scrub_paths

    assert scrub_paths("no such file: /tmp/gradio/ab12/cat.png (see /srv/app/zoo/)") == \
        "no such file: cat.png (see (folder))"
    assert scrub_paths("hf-hub:org/repo and a/b and 1/2") == "hf-hub:org/repo and a/b and 1/2"
    box = gr.Markdown(render=False)

    @guard(box)
    def expected():
        raise ValueError("no such file: /srv/data/secret/cat.png")

    @guard(box)
    def broken():
        raise RuntimeError("boom in /srv/app/attribution/heads/open_set.py")

    @guard()
    def api_broken():
        raise KeyError("/etc/passwd")

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no toast (a gradio warning): the message stays in its own tab
        assert expected() == {box: "**Error:** no such file: cat.png"}
        with caplog.at_level("ERROR"):
            message = broken()[box]
    assert "internal error" in message and "reference" in message and "/srv" not in message and "boom" not in message
    assert "Traceback" in caplog.text and "boom in /srv/app" in caplog.text  # the operator's log has it all
    with pytest.raises(gr.Error, match="internal error") as info:
        api_broken()
    assert "/etc" not in str(info.value)


def test_verdict_and_csv_show_new_fields_generically():
    """The tabs render the library's JSON dicts generically: fields added later show when present (in the details,
    with the scores that decided nothing)."""
    from attribution_app.render import batch_table, csv_table, details_markdown, provenance_markdown, verdict_markdown

    base = {"file": "a.png", "label": "uncertain", "known": True, "scores": {"real": 0.55, "sd": 0.45},
            "unknown_score": 0.2, "threshold": 0.7}
    row = {**base, "reason": "real and sd are close", "synthetic_score": 0.41, "synthetic_threshold": 0.5,
           "provenance": {"summary": "metadata names NovelAI", "indication": "generated", "indication_source": "metadata",
                          "records": [{"source": "png", "field": "Software", "value": "NovelAI"}], "c2pa": None},
           "brand_new_field": 3.25}
    text = verdict_markdown(row, {}).replace("\\", "")
    for expected in ("Uncertain (cannot tell)", "real and sd are close"):
        assert expected in text, (expected, text)
    details = details_markdown(row, {}).replace("\\", "")
    for expected in ("| synthetic score | 0.410 (threshold 0.500; from it on: generated); it did not decide",
                     "| unknown score | 0.200 (threshold 0.700); it did not decide", "| brand new field | 3.250 |",
                     "| most likely known source | real (55.0%)"):
        assert expected in details, (expected, details)
    assert "Synthetic score" not in verdict_markdown(base, {})
    assert "metadata names NovelAI" in provenance_markdown(row) and provenance_markdown(base) == ""
    assert "disagree" not in provenance_markdown(row)  # uncertain pixels take no side
    assert "disagree" in provenance_markdown({**row, "label": "real"})
    header, _ = batch_table([row, base], {})
    assert "synthetic score" in header
    header, values = csv_table([row, {"file": "b.png", "error": "unreadable"}])
    assert header[:8] == ["file", "label", "reason", "confidence", "unknown_score", "threshold", "synthetic_score",
                          "synthetic_threshold"]
    assert "brand_new_field" in header and values[1][header.index("error")] == "unreadable"
    assert "Unknown generator" in verdict_markdown({**base, "label": "unknown"}, {})


def test_whitebox_reports_load_failures(tmp_path):
    from attribution_app.model import HOST

    with pytest.raises(ValueError, match="no such folder on the server") as info:
        HOST.whitebox(str(tmp_path / "no-model"), None, 5)
    assert str(tmp_path) not in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="could not load a diffusers VAE"):
        HOST.whitebox(str(tmp_path / "empty"), None, 5)


def test_whitebox_with_a_tiny_vae(tmp_path):
    pytest.importorskip("diffusers")
    from attribution.verification import WhiteBoxVerifier
    from attribution_app.render import verify_markdown
    from attribution_app.tabs.verify import whitebox_rows
    from conftest import tiny_vae

    folder = tmp_path / "tiny-vae"
    tiny_vae().save_pretrained(folder, safe_serialization=True)
    verifier = WhiteBoxVerifier.from_pretrained(str(folder), steps=2).calibrate(n_samples=2, generator=0)
    calibration = tmp_path / "calibration.zip"  # what a visitor uploads: the saved calibration folder as a zip
    calibration.write_bytes(verifier.to_bytes())
    (tmp_path / "notes.png").write_text("not an image")
    items = [("a.png", str(make_image(tmp_path / "a.png", seed=4, size=32))),
             ("notes.png", str(tmp_path / "notes.png"))]
    rows = whitebox_rows(str(folder), str(calibration), 2, items)
    assert rows[0]["method"] == "whitebox" and isinstance(rows[0]["match"], bool) and rows[1]["error"]
    assert str(tmp_path) not in json.dumps(rows)  # the model is named without the server folder
    summary = verify_markdown(rows, "`tiny` (white-box)")
    assert "of 2 images match" in summary and "1 could not be read" in summary
    with pytest.raises(ValueError, match="no white-box calibration"):
        whitebox_rows(str(folder), None, 3, items[:1])
    with pytest.raises(ValueError, match="pipeline folder or Hub id"):
        whitebox_rows(" ", None, 3, items[:1])


def test_saved_verifiers_are_offered_by_name(user_home, tmp_path):
    """An OCC-CLIP verifier fitted into the user zoo is offered by name (never its path) and verifies uploads."""
    import numpy as np

    from attribution.verification import OCCCLIPVerifier
    from attribution_app import model as ops
    from attribution_app.tabs.verify import saved_choices
    from conftest import tiny_clip

    verifier = OCCCLIPVerifier.from_clip(tiny_clip(tmp_path / "clip"), target="my_gen", steps=2, device="cpu")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 32)).astype(np.float32)
    verifier.fit(X[:5], X[5:]).save_pretrained(user_home / "zoo" / "occ-clip-my-gen")
    assert saved_choices() == [("occ-clip-my-gen (OCCCLIP: my_gen)", "occ-clip-my-gen")]
    items = [("a.png", str(make_image(tmp_path / "a.png", seed=4, size=40)))]
    rows = ops.verify_with(ops.HOST.saved_verifier("occ-clip-my-gen"), items)
    assert rows[0]["model"] == "my_gen" and rows[0]["method"] == "occ-clip" and 0 < rows[0]["false_match_rate_at_score"]
    with pytest.raises(ValueError, match="choose a saved verifier"):
        ops.HOST.saved_verifier(str(user_home / "zoo" / "occ-clip-my-gen"))  # names only, never paths


def test_admin_saves_a_derived_head_and_switching_heads_keeps_visitors_informed(user_home, tmp_path, monkeypatch):
    """Points 1-2 in process: without the token the zoo is read-only; with it, a visitor's enrollments become a
    new head ``<base>-with-<generator>`` that records its base and its own metrics; the shipped head stays the
    default; serving another head leaves visitors' enrollments unapplied, with a notice."""
    from attribution import Attributor, list_zoo, zoo
    from attribution_app import model as ops
    from attribution_app.state import VisitorState, encode, load_stored

    if not (DEFAULT_HEAD / "config.json").is_file():
        pytest.skip("needs the shipped head")
    ops.HOST.set_ref(None)
    try:
        shots = synthetic_images(tmp_path, "s", 4, seed=900)
        out, enrollment = ops.enroll(VisitorState(), "Local Gen", [(p.name, str(p)) for p in shots])
        state = VisitorState().add(enrollment, ops.HOST.fingerprint)
        assert out["saved_to"] is None and "local_gen" in ops.HOST.view(state).classes
        assert "local_gen" not in ops.HOST.base().classes  # the served head is never changed
        monkeypatch.delenv("ATTRIBUTION_ADMIN_TOKEN", raising=False)
        with pytest.raises(ValueError, match="read-only from the web"):
            ops.check_admin("anything")
        monkeypatch.setenv("ATTRIBUTION_ADMIN_TOKEN", "letmein")
        with pytest.raises(ValueError, match="wrong admin token"):
            ops.check_admin("guess")
        ops.check_admin("letmein")
        name = ops.save_enrollments(state)
        assert name == "open-set-efficientnet-lite2-with-local_gen"
        saved, config = zoo.load_head(name)
        assert config["base_head"] == "open-set-efficientnet-lite2" and "metrics" not in config
        assert "figures" not in config and not list((user_home / "zoo" / name).glob("*.png"))
        assert len(list((user_home / "zoo" / name / "exemplars" / "local_gen").glob("*.jpg"))) == 4  # its thumbnails
        assert config["enrolled"]["local_gen"]["expected_recall"] == enrollment.expected_recall
        card = (user_home / "zoo" / name / "README.md").read_text()
        assert "## Base head" in card and "confusion_matrix" not in card and "/work" not in card
        origins = {(e["name"], e["origin"]) for e in list_zoo()}
        assert {("open-set-efficientnet-lite2", "shipped"), (name, "user")} <= origins
        assert zoo.resolve(None) == DEFAULT_HEAD  # the default stays the shipped head
        assert Attributor.from_pretrained().classes == ops.HOST.base().classes
        with pytest.raises(ValueError, match="already has a head"):
            ops.save_enrollments(state)
        # the operator serves the enrolled head: the visitor's deltas were made for another head
        before = ops.HOST.fingerprint
        ops.HOST.switch(name)
        assert ops.HOST.fingerprint != before
        restored = load_stored(encode(state), ops.HOST.fingerprint, ops.HOST.dim)
        assert restored.notice and "another head" in restored.notice and restored.labels == ["local_gen"]
        assert ops.HOST.view(restored).classes == ops.HOST.base().classes  # kept aside, not applied
    finally:
        ops.HOST.set_ref(None)


def test_the_nearest_box_shows_a_visitors_own_enrolled_images_and_only_theirs(user_home, tmp_path):
    """Issue 21: a neighbour that is one of the visitor's enrolled images is shown from the thumbnails kept in their
    signed enrollment (after a reload too, as decoded bytes); another visitor who enrolled the same name gets their
    own pictures, never these."""
    import numpy as np
    from attribution import load_image
    from attribution_app import model as ops
    from attribution_app.state import VisitorState, encode, load_stored
    from attribution_app.tabs.attribute import nearest_gallery

    if not (DEFAULT_HEAD / "config.json").is_file():
        pytest.skip("needs the shipped head")
    ops.HOST.set_ref(None)
    try:
        def visitor(seed):
            shots = synthetic_images(tmp_path / str(seed), "own", 5, seed=seed)
            _, enrollment = ops.enroll(VisitorState(), "Own Gen", [(p.name, str(p)) for p in shots[:4]])
            stored = encode(VisitorState().add(enrollment, ops.HOST.fingerprint))
            return load_stored(stored, ops.HOST.fingerprint, ops.HOST.dim), shots[4]  # as the browser returns it

        def pictures(state, image):
            view, rows = ops.attribute(state, [(image.name, str(image))], nearest=4)
            own = [n["id"] for n in rows[0]["nearest"] if n["label"] == "own_gen"]
            return own, [np.asarray(im).tobytes() for im, _ in nearest_gallery(view, rows[0])]

        def pixels(state):
            return {i: np.asarray(load_image(t)).tobytes() for i, t in state.thumbnails(ops.HOST.fingerprint).items()}

        mine, held_out = visitor(seed=950)
        assert len(mine.enrollments[0].thumbnails) == 4
        own, shown = pictures(mine, held_out)
        assert own and all(i.startswith("exemplars/own_gen/") for i in own)  # its nearest are enrolled exemplars
        assert all(pixels(mine)[i] in shown for i in own)
        theirs, _ = visitor(seed=970)
        other_own, other_shown = pictures(theirs, held_out)
        assert other_own and all(pixels(theirs)[i] in other_shown for i in other_own)
        assert not set(pixels(mine).values()) & set(other_shown)
        _, anyone = pictures(VisitorState(), held_out)
        assert not set(pixels(mine).values()) & set(anyone)
    finally:
        ops.HOST.set_ref(None)


def test_operator_controls_exist_only_with_an_admin_token(monkeypatch):
    from attribution_app import build_demo

    def elem_ids(demo):
        return {b.elem_id for b in demo.blocks.values() if getattr(b, "elem_id", None)}

    monkeypatch.delenv("ATTRIBUTION_ADMIN_TOKEN", raising=False)
    assert "zoo-admin" not in elem_ids(build_demo())
    monkeypatch.setenv("ATTRIBUTION_ADMIN_TOKEN", "letmein")
    assert {"zoo-admin", "admin-token", "admin-load", "admin-save"} <= elem_ids(build_demo())
