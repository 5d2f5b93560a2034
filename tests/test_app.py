"""The Gradio app end to end: a real server (``python app.py``) driven by ``gradio_client``.

The server runs in a subprocess with its own ``ATTRIBUTION_HOME`` (so the user zoo starts empty), on a
free port of 127.0.0.1. One server serves the attribute / enroll / verify / bad-upload tests; a second
one, started on the same home, checks that the enrollment survived the restart.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from conftest import DEV_DATA, REPO, make_image

pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

DEFAULT_HEAD = REPO / "zoo" / "open-set-efficientnet-lite2"
FALLBACK_NAME = "test-head"
NEW_GENERATOR = "Test Gen 1"
NEW_LABEL = "test_gen_1"
START_TIMEOUT = 240
# UI callbacks called outside a request turn their gr.Warning toasts into UserWarnings: expected here
EXPECTED_TOASTS = pytest.mark.filterwarnings("ignore::UserWarning:gradio.helpers")


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
    """``python app.py`` in a subprocess, on 127.0.0.1:<free port>, with its own ATTRIBUTION_HOME."""

    def __init__(self, home: Path, args: list[str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = log
        env = {**os.environ, "ATTRIBUTION_HOME": str(home), "GRADIO_SERVER_NAME": "127.0.0.1",
               "GRADIO_SERVER_PORT": str(self.port), "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
               "PYTHONUNBUFFERED": "1"}
        env.pop("ATTRIBUTION_SHARE", None)
        env.pop("HF_TOKEN", None)
        self._log_fh = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, "app.py", *args], cwd=REPO, env=env, stdout=self._log_fh,
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


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def app_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("app-home")


@pytest.fixture(scope="module")
def server_args(app_home, tmp_path_factory) -> list[str]:
    return head_args(app_home, tmp_path_factory)


@pytest.fixture(scope="module")
def server(app_home, server_args, tmp_path_factory):
    srv = AppServer(app_home, server_args, tmp_path_factory.mktemp("logs") / "app.log")
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
            "enroll": sample_images(folder, "glid3_xl", 5, start=100, seed=2)}


# ----------------------------------------------------------------------------- tests through the server
def test_api_lists_three_named_endpoints(client):
    api = client.view_api(print_info=False, return_format="dict")
    assert set(api["named_endpoints"]) == {"/attribute", "/enroll", "/verify"}
    assert [p["parameter_name"] for p in api["named_endpoints"]["/enroll"]["parameters"]] == ["name", "images"]
    assert [p["parameter_name"] for p in api["named_endpoints"]["/verify"]["parameters"]] == ["model", "image"]


def test_attribute_real_image(client, images):
    path = images["real"][0]
    result = client.predict(handle_file(str(path)), api_name="/attribute")
    assert isinstance(result, dict)
    assert result["file"] == path.name  # the uploaded name, not a server path
    assert result["label"] in [*result["scores"], "unknown"]
    assert result["known"] == (result["label"] != "unknown")
    assert abs(sum(result["scores"].values()) - 1) < 1e-3 and "real" in result["scores"]
    assert isinstance(result["unknown_score"], float) and isinstance(result["threshold"], float)


def test_twenty_concurrent_attribute_requests(server, images, tmp_path):
    """20 clients at once: every request is answered, none fails (the queue holds them, bounded at 64)."""
    from concurrent.futures import ThreadPoolExecutor

    paths = [make_image(tmp_path / f"c{i}.png", seed=700 + i, size=256) for i in range(20)]

    def one(path):
        return Client(server.url, verbose=False).predict(handle_file(str(path)), api_name="/attribute")

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(one, paths))
    assert len(results) == 20
    assert all("error" not in r and r["label"] for r in results)
    assert sorted(r["file"] for r in results) == sorted(p.name for p in paths)


def test_enroll_attribute_verify(client, images):
    files = [handle_file(str(p)) for p in images["enroll"]]
    result = client.predict(NEW_GENERATOR, files, api_name="/enroll")
    assert result["name"] == NEW_LABEL and result["n_images"] == 5 and NEW_LABEL in result["classes"]
    assert result["errors"] == {} and result["saved_to"]
    out = client.predict(handle_file(str(images["enroll"][0])), api_name="/attribute")
    assert NEW_LABEL in out["scores"]
    assert out["label"] == NEW_LABEL  # an enrollment image is attributed to its new class
    ver = client.predict(NEW_LABEL, handle_file(str(images["enroll"][1])), api_name="/verify")
    assert ver["model"] == NEW_LABEL and isinstance(ver["match"], bool) and isinstance(ver["score"], float)
    assert ver["method"] == "blackbox"
    with pytest.raises(Exception, match="already known"):
        client.predict(NEW_GENERATOR, files, api_name="/enroll")


def test_bad_uploads_give_clear_errors(client, images, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("this is not an image")
    with pytest.raises(Exception, match="not a recognised image format"):
        client.predict(handle_file(str(text)), api_name="/attribute")
    with pytest.raises(Exception, match="at least 3"):
        client.predict("too few", [handle_file(str(p)) for p in images["enroll"][:2]], api_name="/enroll")
    with pytest.raises(Exception, match="invalid generator name"):
        client.predict("!!!", [handle_file(str(p)) for p in images["enroll"]], api_name="/enroll")
    with pytest.raises(Exception, match="unknown model"):
        client.predict("no_such_generator", handle_file(str(images["real"][0])), api_name="/verify")
    # the server is still fine
    assert client.predict(handle_file(str(images["real"][0])), api_name="/attribute")["label"]


def test_enrollment_survives_restart(server, app_home, server_args, images, tmp_path):
    server.stop()
    assert "Traceback" not in server.output(), server.output()
    head_dirs = [p for p in (app_home / "zoo").iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(head_dirs) == 1 and (head_dirs[0] / "config.json").is_file()
    again = AppServer(app_home, server_args, tmp_path / "app2.log")
    try:
        client = Client(again.url, verbose=False)
        out = client.predict(handle_file(str(images["enroll"][2])), api_name="/attribute")
        assert NEW_LABEL in out["scores"]
        ver = client.predict(NEW_LABEL, handle_file(str(images["enroll"][2])), api_name="/verify")
        assert ver["model"] == NEW_LABEL
    finally:
        again.stop()
    assert "Traceback" not in again.output(), again.output()


# ----------------------------------------------------------------------------- in-process checks (no model needed)
@pytest.fixture(scope="module")
def app_module():
    sys.path.insert(0, str(REPO))
    import app

    return app


def test_app_module_exposes_demo_without_launching(app_module):
    import gradio as gr

    assert isinstance(app_module.demo, gr.Blocks) and not app_module.demo.is_running


def test_zip_uploads_are_unpacked_safely(app_module, tmp_path):
    archive = tmp_path / "batch.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(make_image(tmp_path / "a.png", seed=1), "a.png")
        zf.write(make_image(tmp_path / "b.jpg", seed=2, fmt="JPEG"), "sub/b.jpg")
        zf.writestr("../../evil.png", (tmp_path / "a.png").read_bytes())
        zf.writestr("readme.txt", "not an image")
        zf.writestr("__MACOSX/._a.png", "resource fork")
    items, notes, tmp = app_module.expand_uploads([str(archive), str(tmp_path / "a.png")], limit=10)
    try:
        names = [n for n, _ in items]
        assert names == ["batch.zip/a.png", "batch.zip/sub/b.jpg", "batch.zip/../../evil.png", "a.png"]
        for _, path in items[:3]:
            assert Path(path).parent == Path(tmp[0])  # never outside the temporary folder
        assert any("skipped 1" in n for n in notes)
    finally:
        app_module._cleanup(tmp)
    assert not Path(tmp[0]).exists()
    with pytest.raises(ValueError, match="too many images"):
        app_module.expand_uploads([str(archive)], limit=2)
    (tmp_path / "bad.zip").write_text("not a zip")
    with pytest.raises(ValueError, match="not a readable zip"):
        app_module.expand_uploads([str(tmp_path / "bad.zip")], limit=10)


@EXPECTED_TOASTS
def test_whitebox_mode_reports_load_failures(app_module, tmp_path):
    image = make_image(tmp_path / "a.png", seed=3)
    message, table = app_module.verify_ui(app_module.WHITEBOX, None, [str(image)], str(tmp_path / "no-model"), 5,
                                          None, progress=None)
    assert "no such folder" in message and table is None
    (tmp_path / "empty").mkdir()
    message, _ = app_module.verify_ui(app_module.WHITEBOX, None, [str(image)], str(tmp_path / "empty"), 5, None,
                                      progress=None)
    assert "could not load a diffusers VAE" in message
    message, _ = app_module.verify_ui(app_module.WHITEBOX, None, [str(image)], "", 5, None, progress=None)
    assert "pipeline folder or Hub id" in message


@EXPECTED_TOASTS
def test_whitebox_mode_with_a_tiny_vae(app_module, tmp_path):
    pytest.importorskip("diffusers")
    import torch
    from diffusers import AutoencoderKL

    from attribution.whitebox import WhiteBoxVerifier

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                        layers_per_block=1, sample_size=32)
    folder = tmp_path / "tiny-vae"
    vae.save_pretrained(folder, safe_serialization=True)
    verifier = WhiteBoxVerifier.from_pretrained(str(folder), steps=2)
    verifier.calibrate(n_samples=2, generator=0)
    calibration = verifier.save_calibration(tmp_path / "calibration.json")
    images = [str(make_image(tmp_path / "a.png", seed=4, size=32)), str(tmp_path / "notes.png")]
    Path(images[1]).write_text("not an image")
    message, table = app_module.verify_ui(app_module.WHITEBOX, None, images, str(folder), 2, str(calibration),
                                          progress=None)
    rows = table["value"]
    assert "of 2 images match" in message and "1 could not be read" in message
    assert rows[0][1] in ("match", "no match") and rows[1][-1]
    uncalibrated, _ = app_module.verify_ui(app_module.WHITEBOX, None, images[:1], str(folder), 3, None,
                                           progress=None)
    assert "no white-box calibration" in uncalibrated


@EXPECTED_TOASTS
def test_switch_enroll_remove_export_in_process(app_module, user_home, images, tmp_path_factory, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    source = head_folder(tmp_path_factory)
    shutil.copytree(source, user_home / "zoo" / "copy-head")
    app_module.set_default_ref("copy-head")
    try:
        first_head = app_module.get_attributor().head
        result = app_module.enroll_files("Local Gen", [(p.name, str(p)) for p in images["enroll"][:3]])
        assert result.name == "local_gen" and Path(result.saved_to) == user_home / "zoo" / "copy-head"
        # copy-on-write: a request holding the previous head keeps a consistent one
        assert "local_gen" in app_module.get_attributor().classes and "local_gen" not in first_head.classes_
        with zipfile.ZipFile(app_module.export_zip()) as zf:
            names = zf.namelist()
        assert {"copy-head/config.json", "copy-head/model.safetensors", "copy-head/README.md"} <= set(names)
        assert any(n.startswith("copy-head/exemplars/local_gen/") for n in names)
        banner, *_ = app_module.refresh_all()
        assert "local_gen" in banner
        assert "Removed" in app_module.remove_ui("local_gen")
        assert "local_gen" not in app_module.get_attributor().classes
        assert "not an enrolled generator" in app_module.remove_ui("real")
        # same features: the backbone is reused, not loaded again
        before = app_module.get_attributor().backbone
        assert app_module.load_head(str(source)).backbone is before
        assert "no zoo head named" in app_module.load_ui("no-such-head")
        assert "needs a write token" in app_module.push_ui("someone/some-head", True)
    finally:
        app_module.set_default_ref(None)
