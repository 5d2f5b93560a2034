"""Upload-to-verdict latency of the web app against one raw backbone forward of the same image.

    python benchmarks/app_latency.py [IMAGE] [--n 10] [--zoo NAME]

Starts ``python app.py`` in a subprocess (on 127.0.0.1, a free port, an empty ``ATTRIBUTION_HOME``), then
times ``gradio_client`` calls to ``/attribute`` (upload + queue + decode + preprocess + forward + head +
JSON back). Each call sends a copy of the image with one pixel changed, so the app's feature cache never
answers for it. The reference is one forward of the backbone on the already preprocessed views of the
same image, in this process, after warm-up. ``benchmarks/speed.py`` imports :func:`measure`.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DEV_DATA = REPO.parent / "shared" / "data" / "dev"
WARMUP = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _default_image() -> Path:
    for cls in ("stable_diffusion_v1", "real"):
        folder = DEV_DATA / cls
        if folder.is_dir():
            files = sorted(p for p in folder.iterdir() if p.is_file())
            if files:
                return files[0]
    from PIL import Image

    path = Path(tempfile.mkdtemp(prefix="app-latency-")) / "synthetic.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (512, 512, 3), dtype=np.uint8)).save(path)
    return path


def _variants(image: Path, n: int) -> list[Path]:
    """``n`` lossless copies of ``image``, each with one pixel changed (distinct feature-cache keys)."""
    from attribution import load_image

    arr = np.asarray(load_image(image)).copy()
    out = Path(tempfile.mkdtemp(prefix="app-latency-"))
    paths = []
    from PIL import Image

    for i in range(n):
        a = arr.copy()
        a[0, 0, 0] = (int(a[0, 0, 0]) + 1 + i) % 256
        path = out / f"{image.stem}-{i}.png"
        Image.fromarray(a).save(path, compress_level=1)
        paths.append(path)
    return paths


def _start_app(zoo: str | None, home: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "ATTRIBUTION_HOME": home, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    args = [sys.executable, str(REPO / "app.py")] + (["--zoo", zoo] if zoo else [])
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited with {proc.returncode}")
        try:
            if httpx.get(url + "gradio_api/info", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"app.py did not answer within {timeout} s")


class _PlainHttp:
    """The same call without gradio_client: upload, ``queue/join`` and the SSE stream until completion.

    Uses gradio's wire protocol (``/gradio_api/upload``, ``queue/join``, ``queue/data``) directly, to show how
    much of the latency is the server and how much the Python client.
    """

    def __init__(self, url: str) -> None:
        import httpx

        self.base = url.rstrip("/") + "/gradio_api"
        self.http = httpx.Client(timeout=120)
        config = self.http.get(url.rstrip("/") + "/config").json()
        self.fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "attribute")

    def __call__(self, path: Path) -> None:
        import uuid

        with open(path, "rb") as fh:
            uploaded = self.http.post(self.base + "/upload", files={"files": (path.name, fh, "image/png")}).json()[0]
        session = uuid.uuid4().hex
        payload = {"data": [{"path": uploaded, "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}],
                   "fn_index": self.fn_index, "session_hash": session, "event_data": None, "trigger_id": None}
        self.http.post(self.base + "/queue/join", json=payload).raise_for_status()
        with self.http.stream("GET", self.base + f"/queue/data?session_hash={session}") as stream:
            for line in stream.iter_lines():
                if "process_completed" in line:
                    if '"success":false' in line.replace(" ", ""):
                        raise RuntimeError(line)
                    return
        raise RuntimeError("the event stream ended before the result")


def burst(image: str | os.PathLike | None = None, n: int = 20, zoo: str | None = None) -> dict[str, float]:
    """``n`` concurrent ``/attribute`` requests from ``n`` clients: wall seconds, answered and failed counts."""
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client, handle_file

    variants = _variants(Path(image) if image else _default_image(), n)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryDirectory(prefix="app-burst-home-") as home:
        proc = _start_app(zoo, home, port)
        try:
            _wait_ready(url, proc)
            Client(url, verbose=False).predict(handle_file(str(variants[0])), api_name="/attribute")  # warm-up

            def one(path: Path) -> bool:
                try:
                    return "label" in Client(url, verbose=False).predict(handle_file(str(path)), api_name="/attribute")
                except Exception:  # noqa: BLE001 - counted as a failure
                    return False

            start = time.perf_counter()
            with ThreadPoolExecutor(n) as pool:
                ok = list(pool.map(one, variants))
            seconds = time.perf_counter() - start
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    return {"seconds": seconds, "answered": float(sum(ok)), "failed": float(len(ok) - sum(ok))}


def measure(image: str | os.PathLike | None = None, n: int = 10, zoo: str | None = None) -> dict[str, float]:
    """Median seconds for ``image``: ``latency`` (app upload-to-verdict), ``raw`` (one backbone forward),
    ``library`` (in-process Attributor call), plus ``p90`` and ``cold_start`` (process start to first verdict).

    The measurements are interleaved call by call, so a busy shared CPU slows them alike. ``raw`` is the
    faster of a forward on the main thread and one on a worker thread (where the app runs its models).
    """
    from gradio_client import Client, handle_file

    from attribution import Attributor, load_image

    image = Path(image) if image else _default_image()
    variants = _variants(image, 3 * (n + WARMUP) + 1)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    raw_main, raw, library, app, plain = [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="app-latency-home-") as home:
        start = time.perf_counter()
        proc = _start_app(zoo, home, port)
        try:
            _wait_ready(url, proc)
            client = Client(url, verbose=False)
            result = client.predict(handle_file(str(variants[0])), api_name="/attribute")
            cold = time.perf_counter() - start
            attributor = Attributor.from_pretrained(zoo)
            backbone = attributor.backbone
            views = backbone.transform(load_image(image))
            n_views = len(views)  # distinct crops of this image
            worker = ThreadPoolExecutor(1)  # the app runs models in worker threads, so time them there too

            def timed(fn, *args):
                t = time.perf_counter()
                fn(*args)
                return time.perf_counter() - t

            for i in range(n + WARMUP):
                t_main = timed(backbone.encode, views, n_views)
                t_raw = worker.submit(timed, backbone.encode, views, n_views).result()
                t_lib = worker.submit(timed, lambda p: attributor([p], nearest=4), variants[1 + 3 * i]).result()
                t = time.perf_counter()
                result = client.predict(handle_file(str(variants[2 + 3 * i])), api_name="/attribute")
                t_app = time.perf_counter() - t
                assert result.get("label"), result
                try:
                    if i == 0:
                        http = _PlainHttp(url)
                    t_plain = timed(http, variants[3 + 3 * i])
                except Exception:  # noqa: BLE001 - the wire protocol is gradio-internal; report nan
                    t_plain = float("nan")
                if i >= WARMUP:
                    raw_main.append(t_main)
                    raw.append(t_raw)
                    library.append(t_lib)
                    app.append(t_app)
                    plain.append(t_plain)
            worker.shutdown()
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    app.sort()
    return {"latency": statistics.median(app), "p90": app[min(len(app) - 1, int(0.9 * len(app)))],
            "latency_http": statistics.median(plain), "raw": min(statistics.median(raw), statistics.median(raw_main)),
            "raw_worker": statistics.median(raw), "raw_main": statistics.median(raw_main),
            "library": statistics.median(library), "cold_start": cold, "label": result["label"], "n_views": n_views,
            "backbone": backbone.id, "image": str(image), "n": n}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?", default=None, help="image to send (default: a dev image)")
    parser.add_argument("--n", type=int, default=10, help="timed calls after warm-up")
    parser.add_argument("--zoo", default=None, help="head the app and the reference load (default head)")
    args = parser.parse_args(argv)
    r = measure(args.image, args.n, args.zoo)
    size = "x".join(map(str, __import__("PIL.Image", fromlist=["Image"]).open(r["image"]).size))
    print(f"\nimage {Path(r['image']).name} ({size}), backbone {r['backbone']}, {r['n_views']} views per image, "
          f"{os.cpu_count()} CPU cores, median of {r['n']} interleaved calls after {WARMUP} warm-up calls\n")
    rows = [("raw backbone forward, main thread", r["raw_main"], r["raw_main"] / r["raw"]),
            ("raw backbone forward, worker thread", r["raw_worker"], r["raw_worker"] / r["raw"]),
            ("library Attributor call, worker thread (decode + preprocess + forward + head)", r["library"],
             r["library"] / r["raw"]),
            ("app upload-to-verdict via gradio_client, median", r["latency"], r["latency"] / r["raw"]),
            ("app upload-to-verdict via gradio_client, p90", r["p90"], r["p90"] / r["raw"]),
            ("app upload-to-verdict via plain HTTP (no gradio_client), median", r["latency_http"],
             r["latency_http"] / r["raw"]),
            ("app cold start (process start to first verdict)", r["cold_start"], float("nan"))]
    print("| measurement | seconds | x raw forward (faster of the two) |\n|---|---|---|")
    for name, seconds, ratio in rows:
        print(f"| {name} | {seconds:.3f} | {ratio:.2f} |")
    print(f"\noverhead over the library call: {1000 * (r['latency'] - r['library']):.0f} ms with gradio_client, "
          f"{1000 * (r['latency_http'] - r['library']):.0f} ms with plain HTTP (upload, queue, JSON); "
          f"verdict: {r['label']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
