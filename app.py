"""Gradio web app: which generative model made this image?

A thin UI over :class:`attribution.Attributor` with one tab per task (Attribute, Enroll, Verify, Zoo)
and three named API endpoints for ``gradio_client``::

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    client.predict(handle_file("photo.png"), api_name="/attribute")            # AttributionOutput JSON
    client.predict("my_gen", [handle_file("a.png"), ...], api_name="/enroll")   # EnrollmentOutput JSON
    client.predict("my_gen", handle_file("b.png"), api_name="/verify")          # VerificationOutput JSON

Run ``python app.py [--zoo NAME|FOLDER|hf-hub:org/repo] [--share]``; ``GRADIO_SERVER_NAME`` and
``GRADIO_SERVER_PORT`` are honoured by gradio itself, ``ATTRIBUTION_ZOO`` / ``ATTRIBUTION_SHARE=1``
are the environment equivalents of the flags (handy on Hugging Face Spaces).

The model is a module-level singleton, loaded once (lazily, under a lock, and warmed up before the
server starts when run as a script). Enroll / remove / load build a new ``Attributor`` and swap the
reference, so a request that is running keeps a consistent model. Enrollments are saved to the user
zoo (``$ATTRIBUTION_HOME/zoo/<head name>``), which takes precedence over the shipped ``zoo/``.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import os
import re
import sys
import tempfile
import threading
import traceback
import zipfile
from pathlib import Path
from typing import Any, Callable, Sequence

import gradio as gr
import numpy as np

from attribution import REAL, UNKNOWN, Attributor, ImageDecodeError, ZooError, load_image, normalize_label
from attribution import zoo
from attribution.constants import CARD_NAME, DEFAULT_ZOO_NAME, IMAGE_EXTENSIONS, MIN_IMAGE_SIZE, UNCERTAIN
from attribution.names import validate_head_name
from attribution.pipeline import MIN_ENROLL_IMAGES

MAX_ATTRIBUTE_IMAGES = 200
MAX_VERIFY_IMAGES = 200
MAX_ENROLL_IMAGES = 50
MAX_FILE_SIZE = "25mb"
MAX_FILE_BYTES = 25 * 1024 * 1024
MAX_ZIP_TOTAL_BYTES = 1024 * 1024 * 1024  # uncompressed, all members of one request
NEAREST = 4
THUMBNAIL = 160
QUEUE_SIZE = 64
CONCURRENCY = 2  # default per event; model work shares one group of 1 (2 CPU cores are enough for one forward)
UPLOAD_TYPES = ["image", ".heic", ".heif", ".avif", ".zip"]  # browsers do not count HEIC/AVIF as "image"
Progress = Callable[[int, int], None]

EXPECTED_ERRORS = (ZooError, ImageDecodeError, ValueError, OSError, RuntimeError, KeyError)


# --------------------------------------------------------------------------- model state
class _ModelState:
    """The active Attributor: loaded once, replaced (never mutated in place) by enroll/remove/load."""

    def __init__(self) -> None:
        self.ref: str | None = os.environ.get("ATTRIBUTION_ZOO") or None
        self.attributor: Attributor | None = None
        self.load_error: str | None = None
        self.lock = threading.RLock()  # serialises writers (load, enroll, remove); readers take the reference
        self.whitebox: tuple[tuple, Any] | None = None
        self.whitebox_lock = threading.Lock()


STATE = _ModelState()


def set_default_ref(ref: str | None) -> None:
    """Head to load on first use (``--zoo``); ``None`` is the default zoo head."""
    with STATE.lock:
        STATE.ref = ref or None
        STATE.attributor = None
        STATE.load_error = None


def get_attributor() -> Attributor:
    """The active Attributor, loaded on first use. Raises ``ZooError`` with a clear message if it cannot load."""
    att = STATE.attributor
    if att is not None:
        return att
    with STATE.lock:
        if STATE.attributor is None:
            try:
                STATE.attributor = Attributor.from_pretrained(STATE.ref)
                STATE.load_error = None
            except (ZooError, ValueError, OSError, ImportError, RuntimeError) as exc:
                STATE.load_error = str(exc)
                raise ZooError(f"no attribution head is loaded ({STATE.ref or DEFAULT_ZOO_NAME}): {exc}. "
                               "Pick another head in the Zoo tab.") from None
        return STATE.attributor


def warm_up() -> Attributor:
    """Load the head and run one forward pass so the first request does not pay for it."""
    att = get_attributor()
    rng = np.random.default_rng(0)
    att(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
    return att


def _head_name(att: Attributor) -> str:
    """Name the active head resolves by: its zoo folder name, else its config name (made Hub-style)."""
    source = Path(att.source).resolve() if att.source else None
    zoo_roots = {zoo.user_zoo_dir().resolve(), zoo.SHIPPED_ZOO.resolve()}
    name = source.name if source is not None and source.parent in zoo_roots else att.name
    try:
        return validate_head_name(name)
    except ValueError:
        cleaned = re.sub(r"[^a-z0-9_.-]+", "-", name.lower()).strip("-.") or "attribution-head"
        return validate_head_name(cleaned.replace("..", ".")[:96])


def user_head_dir(att: Attributor) -> Path:
    """Where enrollments of ``att`` are saved (read at call time: ``ATTRIBUTION_HOME`` may change)."""
    return zoo.user_zoo_dir() / _head_name(att)


def load_head(ref: str) -> Attributor:
    """Make ``ref`` (zoo name, folder or ``hf-hub:org/repo``) the active head, reusing the backbone when it fits."""
    ref = (ref or "").strip()
    if not ref:
        raise ValueError("choose a head from the list or type hf-hub:org/repo")
    folder = zoo.resolve(ref)
    zoo.read_config(folder)
    with STATE.lock:
        current = STATE.attributor
        new = None
        if current is not None:
            try:
                new = Attributor.from_pretrained(str(folder), backbone=current.backbone, cache=current.extractor.cache)
            except ZooError:
                new = None  # trained on other features: load the backbone it needs below
        if new is None:
            new = Attributor.from_pretrained(str(folder), cache=current.extractor.cache if current else None)
        STATE.attributor, STATE.ref, STATE.load_error = new, ref, None
        return new


# --------------------------------------------------------------------------- uploads
def _file_path(f: Any) -> str:
    return str(getattr(f, "name", None) or f)


def expand_uploads(files: Any, limit: int, what: str = "images") -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """``(display name, path)`` per image in ``files``; ``.zip`` archives are unpacked (image members only).

    Returns the items, notes (skipped zip members) and temporary folders to delete afterwards.
    Raises ``ValueError`` when there are more than ``limit`` images.
    """
    if files is None:
        files = []
    elif isinstance(files, (str, os.PathLike)) or hasattr(files, "name"):
        files = [files]
    items: list[tuple[str, str]] = []
    notes: list[str] = []
    tmp_dirs: list[str] = []
    total = 0
    for f in files:
        path = _file_path(f)
        name = Path(path).name
        if path.lower().endswith(".zip"):
            try:
                archive = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as exc:
                raise ValueError(f"{name} is not a readable zip archive ({exc})") from None
            with archive:
                tmp = tempfile.mkdtemp(prefix="attribution-zip-")
                tmp_dirs.append(tmp)
                skipped = 0
                for i, info in enumerate(archive.infolist()):
                    member = info.filename
                    base = Path(member).name
                    if info.is_dir() or not base or base.startswith(".") or member.startswith("__MACOSX/"):
                        continue
                    if not base.lower().endswith(IMAGE_EXTENSIONS) or info.file_size > MAX_FILE_BYTES:
                        skipped += 1
                        continue
                    total += info.file_size
                    if total > MAX_ZIP_TOTAL_BYTES:
                        raise ValueError(f"{name}: the archive is too large once unpacked "
                                         f"(limit {MAX_ZIP_TOTAL_BYTES // 2**20} MB)")
                    if len(items) >= limit:
                        raise ValueError(f"too many {what}: more than {limit} per request. Split them into "
                                         "several requests or use the command line (python -m attribution).")
                    target = Path(tmp) / f"{i:05d}_{base}"
                    try:
                        target.write_bytes(archive.read(info))
                    except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError) as exc:
                        raise ValueError(f"{name}: could not unpack {member} ({exc})") from None
                    items.append((f"{name}/{member}", str(target)))
                if skipped:
                    notes.append(f"{name}: skipped {skipped} file(s) that are not images (or larger than "
                                 f"{MAX_FILE_SIZE})")
            continue
        if len(items) >= limit:
            raise ValueError(f"too many {what}: more than {limit} per request. Split them into several "
                             "requests or use the command line (python -m attribution).")
        items.append((name, path))
    return items, notes, tmp_dirs


def _cleanup(tmp_dirs: Sequence[str]) -> None:
    import shutil

    for d in tmp_dirs:
        shutil.rmtree(d, ignore_errors=True)


def _gr_progress(progress: Any, desc: str) -> Progress | None:
    if progress is None:
        return None

    def update(done: int, total: int) -> None:
        try:
            progress((done, total), desc=desc, unit="images")
        except Exception:  # noqa: BLE001 - a progress bar must never break the request
            pass

    return update


def _md(text: Any) -> str:
    """User-given text (file or generator names) safe inside Markdown."""
    return re.sub(r"([\\`*_{}\[\]<>()#+!|~])", r"\\\1", str(text))


def _code(text: Any) -> str:
    """User-given text as a Markdown code span (nothing inside is interpreted)."""
    return "`" + str(text).replace("`", "'").replace("\n", " ") + "`"


# --------------------------------------------------------------------------- core operations (UI + API)
def attribute_files(paths: Sequence[tuple[str, str]], progress: Progress | None = None,
                    nearest: int = NEAREST) -> tuple[Attributor, list[Any]]:
    """Attribute ``(display name, path)`` pairs; ``file`` in each output is the display name."""
    att = get_attributor()
    outputs = att([p for _, p in paths], progress=progress, nearest=nearest)
    for (name, _), out in zip(paths, outputs):
        out.file = name
    return att, outputs


def verify_files(paths: Sequence[tuple[str, str]], model: str, progress: Progress | None = None) -> list[Any]:
    att = get_attributor()
    if not model:
        raise ValueError("choose the generator to verify against")
    outputs = att.verify([p for _, p in paths], model, progress=progress)
    for (name, _), out in zip(paths, outputs):
        out.file = name
    return outputs


def enroll_files(name: str, paths: Sequence[tuple[str, str]], progress: Progress | None = None):
    """Enroll generator ``name`` and save the head to the user zoo. Returns the EnrollmentOutput."""
    if not name or not str(name).strip():
        raise ValueError("type a name for the generator first, e.g. 'Midjourney v6'")
    label = normalize_label(name)
    if len(paths) < MIN_ENROLL_IMAGES:
        raise ValueError(f"enrollment needs at least {MIN_ENROLL_IMAGES} images of {label}; got {len(paths)}")
    if len(paths) > MAX_ENROLL_IMAGES:
        raise ValueError(f"at most {MAX_ENROLL_IMAGES} images per enrollment; got {len(paths)}")
    with STATE.lock:
        current = get_attributor()
        if label in current.classes:
            raise ValueError(f"{label!r} is already known to this head; remove it first or choose another name")
        result = current.enroll(name, [p for _, p in paths], progress=progress, save_to=user_head_dir(current))
    names = {str(Path(p).resolve()): n for n, p in paths}
    result.errors = {names.get(k, Path(k).name): v for k, v in result.errors.items()}
    result.error_codes = {names.get(k, Path(k).name): v for k, v in result.error_codes.items()}
    return result


def remove_generator(label: str) -> Path:
    """Remove an enrolled generator and save the head to the user zoo."""
    if not label:
        raise ValueError("choose an enrolled generator to remove")
    with STATE.lock:
        current = get_attributor()
        if label not in current.config.get("enrolled", {}):
            raise ValueError(f"{label!r} is not an enrolled generator of this head")
        current.remove(label, save_to=user_head_dir(current))
    return user_head_dir(current)


# --------------------------------------------------------------------------- API endpoints
def _api_error(exc: BaseException) -> gr.Error:
    if isinstance(exc, gr.Error):
        return exc
    if isinstance(exc, EXPECTED_ERRORS):
        return gr.Error(str(exc), print_exception=False)
    traceback.print_exc()
    return gr.Error(f"unexpected error ({type(exc).__name__}): {exc}", print_exception=False)


def api_attribute(image: str | None) -> dict[str, Any]:
    """Attribute one image file. Returns ``AttributionOutput.to_json()`` (``file`` is the uploaded name)."""
    if not image:
        raise gr.Error("send one image file", print_exception=False)
    try:
        _, outputs = attribute_files([(Path(_file_path(image)).name, _file_path(image))], nearest=NEAREST)
    except Exception as exc:  # noqa: BLE001 - clients get a message, never a traceback
        raise _api_error(exc) from None
    out = outputs[0]
    if out.error:
        raise gr.Error(f"could not read {out.file}: {out.error}", print_exception=False)
    return out.to_json()


def api_enroll(name: str, images: list[str] | None) -> dict[str, Any]:
    """Enroll generator ``name`` from 3-50 image files (or zips); returns ``EnrollmentOutput.to_json()``."""
    try:
        items, _, tmp = expand_uploads(images, MAX_ENROLL_IMAGES)
        try:
            return enroll_files(name, items).to_json()
        finally:
            _cleanup(tmp)
    except Exception as exc:  # noqa: BLE001 - clients get a message, never a traceback
        raise _api_error(exc) from None


def api_verify(model: str, image: str | None) -> dict[str, Any]:
    """Black-box verification of one image against ``model``; returns ``VerificationOutput.to_json()``."""
    if not image:
        raise gr.Error("send one image file", print_exception=False)
    try:
        out = verify_files([(Path(_file_path(image)).name, _file_path(image))], model)[0]
    except Exception as exc:  # noqa: BLE001 - clients get a message, never a traceback
        raise _api_error(exc) from None
    if out.error:
        raise gr.Error(f"could not read {out.file}: {out.error}", print_exception=False)
    return out.to_json()


# --------------------------------------------------------------------------- UI helpers
def _percent(p: float | None) -> str:
    return "-" if p is None else f"{100 * p:.1f}%"


def _display_name(att: Attributor, label: str) -> str:
    info = att.config.get("enrolled", {}).get(label) or {}
    shown = info.get("display_name")
    return f"{label} ({shown})" if shown and shown != label else label


def verdict_markdown(att: Attributor, out: Any) -> str:
    if out.error:
        return f"### Could not read {_md(out.file)}\n{_md(out.error)}"
    top = max(out.scores, key=out.scores.get)
    conf = out.scores[top]
    u, t = out.unknown_score, out.threshold
    if out.label == UNKNOWN:
        title = "## Verdict: unknown generator"
        body = (f"The image is far from every source this head knows (unknown score **{u:.3f}** is above the "
                f"threshold **{t:.3f}**). It was probably made by a generator that is not enrolled yet; you "
                f"can add it in the **Enroll** tab. Closest known source: `{top}` ({_percent(conf)}), "
                "not a reliable guess.")
    elif out.label == UNCERTAIN:
        title = "## Verdict: uncertain"
        body = ("The frames of this animated image point to different sources: " + ", ".join(
            f"frame {f['index']}: `{f['label']}`" for f in out.frames_judged) + ".")
    else:
        name = _display_name(att, out.label)
        title = "## Verdict: real (not generated)" if out.label == REAL else f"## Verdict: made by {_code(name)}"
        body = (f"Confidence **{_percent(conf)}** among the {len(out.scores)} known sources. Unknown score "
                f"**{u:.3f}** is below the threshold **{t:.3f}**, so the image is close to a known source.")
    note = f"\n\n*Note: {_md(out.note)}*" if out.note else ""
    return f"{title}\n{_md(out.file)}\n\n{body}{note}"


def nearest_gallery(att: Attributor, out: Any) -> list[tuple[Any, str]]:
    """Thumbnails (PIL, so no server path is exposed) of the nearest exemplars found on this machine."""
    items = []
    for n in out.nearest or []:
        path = att.exemplar_path(n.get("id", ""))
        if path is None:
            continue
        try:
            im = load_image(path)
        except (ImageDecodeError, OSError):
            continue
        im.thumbnail((THUMBNAIL, THUMBNAIL))
        items.append((im, f"{n['label']} ({n['distance']:.2f})"))
    return items


def _preview(path: str) -> Any:
    try:
        im = load_image(path)
    except (ImageDecodeError, OSError):
        return None
    im.thumbnail((512, 512))
    return im


def _write_csv(header: list[str], rows: list[list[Any]], name: str) -> str:
    folder = tempfile.mkdtemp(prefix="attribution-csv-")
    path = Path(folder) / name
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        # file names come from users: keep spreadsheets from reading them as formulas
        writer.writerows([[f"'{v}" if isinstance(v, str) and v[:1] in ("=", "+", "-", "@") else v for v in row]
                          for row in rows])
    return str(path)


def _warn(message: str) -> str:
    gr.Warning(message)
    return f"**Error:** {_md(message)}"


def _unexpected(exc: BaseException) -> str:
    traceback.print_exc()
    return _warn(f"unexpected error ({type(exc).__name__}): {exc}")


# --------------------------------------------------------------------------- Attribute tab
ATTRIBUTE_HEADER = ["file", "label", "confidence", "unknown score", "error"]
ATTRIBUTE_CSV_HEADER = ["file", "label", "confidence", "unknown_score", "threshold", "error"]


def attribute_ui(files: Any, progress=gr.Progress()):
    hidden = gr.update(visible=False)
    empty = ("", hidden, None, "", None, [], hidden, "", None, gr.update(visible=False, value=None))
    if not files:
        return ("Upload one or more images (or a .zip of images) first.",) + empty[1:]
    tmp: list[str] = []
    try:
        items, notes, tmp = expand_uploads(files, MAX_ATTRIBUTE_IMAGES)
        if not items:
            return (_warn("no images found in the upload"),) + empty[1:]
        att, outputs = attribute_files(items, progress=_gr_progress(progress, "Attributing"))
        status = "\n".join(f"*{_md(n)}*" for n in notes)
        if len(outputs) == 1:
            out = outputs[0]
            gallery = nearest_gallery(att, out)
            return (status, gr.update(visible=True), _preview(items[0][1]), verdict_markdown(att, out),
                    out.scores or None, gallery, hidden, "", None, gr.update(visible=False, value=None))
        rows, csv_rows = [], []
        for out in outputs:
            conf = max(out.scores.values()) if out.scores else None
            label = "unknown generator" if out.label == UNKNOWN else out.label or ""
            rows.append([out.file, label, None if conf is None else round(conf, 3),
                         None if out.unknown_score is None else round(out.unknown_score, 3), out.error or ""])
            csv_rows.append([out.file, out.label or "", conf, out.unknown_score, out.threshold, out.error or ""])
        counts: dict[str, int] = {}
        for out in outputs:
            key = "unreadable" if out.error else ("unknown generator" if out.label == UNKNOWN else out.label)
            counts[key] = counts.get(key, 0) + 1
        threshold = next((o.threshold for o in outputs if o.threshold is not None), None)
        summary = (f"**{len(outputs)} images:** " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
                   + (f". An unknown score above {threshold:.3f} means *unknown generator*; confidence is the "
                      "probability of the most likely known source." if threshold is not None else "."))
        csv_path = _write_csv(ATTRIBUTE_CSV_HEADER, csv_rows, "attribution.csv")
        return (status, hidden, None, "", None, [], gr.update(visible=True), summary, rows,
                gr.update(visible=True, value=csv_path))
    except EXPECTED_ERRORS as exc:
        return (_warn(str(exc)),) + empty[1:]
    except Exception as exc:  # noqa: BLE001 - never show a traceback in the page
        return (_unexpected(exc),) + empty[1:]
    finally:
        _cleanup(tmp)


# --------------------------------------------------------------------------- Enroll tab
def enroll_ui(name: str, files: Any, progress=gr.Progress()) -> str:
    tmp: list[str] = []
    try:
        items, notes, tmp = expand_uploads(files, MAX_ENROLL_IMAGES)
        result = enroll_files(name, items, progress=_gr_progress(progress, "Enrolling"))
        lines = [f"**Enrolled {_code(result.name)}** from {result.n_images} images in {result.seconds:.1f} s. "
                 f"Saved to {_code(result.saved_to)}, so it is still there after a restart"
                 + ("" if Path(result.saved_to).name == DEFAULT_ZOO_NAME
                    else f" (start the app with {_code('--zoo ' + Path(result.saved_to).name)})")
                 + ". Try it in the **Attribute** or **Verify** tab."]
        lines += [f"- skipped {_md(f)}: {_md(e)}" for f, e in result.errors.items()]
        lines += [f"- {_md(n)}" for n in notes]
        return "\n".join(lines)
    except EXPECTED_ERRORS as exc:
        return _warn(str(exc))
    except Exception as exc:  # noqa: BLE001
        return _unexpected(exc)
    finally:
        _cleanup(tmp)


def remove_ui(label: str) -> str:
    try:
        saved = remove_generator(label)
        return f"Removed {_code(label)}; head saved to {_code(saved)}."
    except EXPECTED_ERRORS as exc:
        return _warn(str(exc))
    except Exception as exc:  # noqa: BLE001
        return _unexpected(exc)


_EXPORTS: dict[tuple, str] = {}


def export_zip() -> str | None:
    """The active head folder as ``<name>.zip`` (JSON, safetensors, card, exemplar thumbnails)."""
    att = STATE.attributor
    if att is None or att.source is None or not Path(att.source).is_dir():
        return None
    folder = Path(att.source)
    try:
        files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(zoo.PICKLE_SUFFIXES)
                       and not any(part.startswith(".") for part in p.relative_to(folder).parts))
        key = (str(folder), tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files))
        cached = _EXPORTS.get(key)
        if cached and Path(cached).is_file():
            return cached
        target = Path(tempfile.mkdtemp(prefix="attribution-export-")) / f"{_head_name(att)}.zip"
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in files:
                zf.write(p, f"{_head_name(att)}/{p.relative_to(folder)}")
    except OSError:  # the folder was being replaced by a save: the next refresh exports it
        return None
    _cleanup([str(Path(old).parent) for old in _EXPORTS.values()])
    _EXPORTS.clear()
    _EXPORTS[key] = str(target)
    return str(target)


def push_ui(repo_id: str, private: bool) -> str:
    token = os.environ.get("HF_TOKEN")
    if not token:
        return _warn("pushing to the Hugging Face Hub needs a write token: restart the app with the HF_TOKEN "
                     "environment variable set (or use the .zip export and upload it yourself)")
    repo_id = (repo_id or "").strip()
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", repo_id):
        return _warn("type a Hub repo id like your-name/my-attribution-head")
    try:
        att = get_attributor()
        if att.source is None:
            raise ValueError("the active head has no folder to upload")
        url = zoo.push_to_hub(str(att.source), repo_id, token=token, private=bool(private))
        return f"Pushed to [{_md(repo_id)}]({url}). Others can load it with {_code('hf-hub:' + repo_id)}."
    except EXPECTED_ERRORS as exc:
        return _warn(f"push failed: {exc}")
    except Exception as exc:  # noqa: BLE001 - huggingface_hub raises many HTTP error types
        return _warn(f"push failed ({type(exc).__name__}): {exc}")


# --------------------------------------------------------------------------- Verify tab
VERIFY_HEADER = ["file", "verdict", "score", "threshold", "error"]
VERIFY_WIDTHS = ["40%", "14%", "13%", "13%", "20%"]
WHITEBOX_HEADER = ["file", "verdict", "score", "threshold", "details", "error"]
WHITEBOX_WIDTHS = ["28%", "12%", "11%", "11%", "23%", "15%"]


def _whitebox_verifier(source: str, calibration: str | None, steps: int):
    """Cached WhiteBoxVerifier (imported lazily: it needs diffusers)."""
    try:
        from attribution.whitebox import WhiteBoxVerifier
    except ImportError as exc:
        raise RuntimeError(f"white-box mode is unavailable ({exc}); install diffusers") from None
    local = Path(source).expanduser()
    if (local.is_absolute() or source.startswith((".", "~"))) and not local.is_dir():
        raise RuntimeError(f"no such folder on the server: {source} (give a diffusers pipeline folder or a Hub id)")
    calib_hash = hashlib.sha256(Path(calibration).read_bytes()).hexdigest() if calibration else None
    key = (source, calib_hash, int(steps))
    with STATE.whitebox_lock:
        if STATE.whitebox is not None and STATE.whitebox[0] == key:
            return STATE.whitebox[1]
        STATE.whitebox = None  # free the previous VAE before loading another
        try:
            verifier = WhiteBoxVerifier.from_pretrained(str(local) if local.is_dir() else source,
                                                        calibration=calibration, steps=int(steps))
        except ImportError as exc:
            raise RuntimeError(f"white-box mode is unavailable ({exc}); install diffusers") from None
        except Exception as exc:  # noqa: BLE001 - diffusers / hub raise many types
            reason = f"{type(exc).__name__}: {str(exc).rstrip('.')}"
            raise RuntimeError(f"could not load a diffusers VAE from {source!r}: {reason}. Give a local pipeline "
                               "folder (with vae/) or a Hub id available offline.") from None
        if not hasattr(verifier, "offset_"):
            raise RuntimeError("this model has no white-box calibration: upload the attribution_whitebox.json "
                               "made by WhiteBoxVerifier.calibrate(...).save_calibration(...), or put it in the "
                               "pipeline folder")
        STATE.whitebox = (key, verifier)
        return verifier


def verify_ui(mode: str, model: str, files: Any, wb_source: str, wb_steps: float, wb_calibration: Any,
              progress=gr.Progress()):
    tmp: list[str] = []
    try:
        items, notes, tmp = expand_uploads(files, MAX_VERIFY_IMAGES)
        if not items:
            return _warn("upload one or more images to verify first"), None
        rows: list[list[Any]] = []
        if mode == WHITEBOX:
            source = (wb_source or "").strip()
            if not source:
                return _warn("type a diffusers pipeline folder or Hub id for white-box mode"), None
            calibration = _file_path(wb_calibration) if wb_calibration else None
            verifier = _whitebox_verifier(source, calibration, int(wb_steps or 50))
            report = _gr_progress(progress, "Inverting the VAE decoder")
            for (name, _), o in zip(items, verifier.verify_files([p for _, p in items], progress=report)):
                rows.append([name, "" if o.error else ("match" if o.match else "no match"), o.score, o.threshold,
                             o.note or "", o.error or ""])
            target, header, widths = f"{_code(source)} (white-box)", WHITEBOX_HEADER, WHITEBOX_WIDTHS
        else:
            outputs = verify_files(items, model, progress=_gr_progress(progress, "Verifying"))
            for o in outputs:
                rows.append([o.file, "" if o.error else ("match" if o.match else "no match"), o.score,
                             o.threshold, o.error or ""])
            target, header, widths = _code(model), VERIFY_HEADER, VERIFY_WIDTHS
        matches = sum(r[1] == "match" for r in rows)
        errors = sum(bool(r[-1]) for r in rows)
        if len(rows) == 1 and not errors:
            summary = (f"## {'Match' if matches else 'No match'}\n{_md(rows[0][0])} "
                       f"{'looks' if matches else 'does not look'} made by {target} "
                       f"(score {rows[0][2]:+.3f}, threshold {rows[0][3]:+.3f}; a match needs a score above it).")
        else:
            summary = (f"**{matches} of {len(rows)} images match {target}**"
                       + (f", {errors} could not be read" if errors else "") + ".")
        if notes:
            summary += "\n" + "\n".join(f"*{_md(n)}*" for n in notes)
        return summary, gr.update(value=rows, headers=header, column_widths=widths)
    except EXPECTED_ERRORS as exc:
        return _warn(str(exc)), None
    except Exception as exc:  # noqa: BLE001
        return _unexpected(exc), None
    finally:
        _cleanup(tmp)


# --------------------------------------------------------------------------- Zoo tab + shared refresh
def _strip_front_matter(text: str) -> str:
    if text.startswith("---"):
        end = text.find("\n---", 3)
        if end != -1:
            return text[end + 4:].lstrip()
    return text


def head_summary(att: Attributor | None) -> str:
    if att is None:
        reason = STATE.load_error or "not loaded yet"
        return f"**No head loaded** ({_md(reason)}). Choose one in the **Zoo** tab."
    cfg = att.config
    enrolled = cfg.get("enrolled", {})
    classes = ", ".join(f"`{c}`" + (" (enrolled)" if c in enrolled else "") for c in att.classes)
    location = "user zoo" if att.source and zoo.user_zoo_dir() in Path(att.source).parents else "shipped / other"
    lines = [f"**Active head:** {_code(att.name)} ({location})",
             f"**Backbone:** {_code(cfg.get('backbone'))}, layers {len(cfg.get('layers', []))}, "
             f"{cfg.get('preprocess_cfg', {}).get('n_crops', '?')} crop(s) of "
             f"{cfg.get('preprocess_cfg', {}).get('size', '?')} px",
             f"**Classes ({len(att.classes)}):** {classes}",
             f"**Unknown threshold:** {float(att.head.offset_):.4f}"]
    metrics = {k: v for k, v in cfg.get("metrics", {}).items() if isinstance(v, (int, float, str))}
    if metrics:
        lines.append("\n| metric | value |\n|---|---|\n" + "\n".join(
            f"| {_md(k)} | {v:.3f} |" if isinstance(v, float) else f"| {_md(k)} | {_md(v)} |"
            for k, v in metrics.items()))
    else:
        lines.append("**Metrics:** not recorded in this head's config.")
    return "\n\n".join(lines)


def head_card(att: Attributor | None) -> str:
    if att is None or att.source is None:
        return ""
    path = Path(att.source) / CARD_NAME
    try:
        return _strip_front_matter(path.read_text(encoding="utf-8"))
    except OSError:
        return "*This head has no model card (README.md).*"


def zoo_table() -> list[list[Any]]:
    rows = []
    for entry in zoo.list_zoo():
        rows.append([entry["name"], entry.get("location", "?"), entry.get("backbone", ""),
                     len(entry.get("classes", [])), entry.get("error", "")])
    return rows


def banner(att: Attributor | None) -> str:
    if att is None:
        return f"**No head loaded.** {_md(STATE.load_error or '')} Choose one in the **Zoo** tab."
    names = ", ".join(f"`{c}`" for c in att.classes)
    return f"Active head {_code(att.name)} knows {len(att.classes)} sources: {names}."


def refresh_all(current_model: str | None = None):
    """Values of every component that depends on the active head (after load, enroll, remove, page load)."""
    try:
        att = get_attributor()
    except ZooError:
        att = None
    classes = att.classes if att else []
    enrolled = att.config.get("enrolled", {}) if att else {}
    enrolled_rows = [[k, v.get("display_name", ""), v.get("n_images", ""), v.get("enrolled_at", "")]
                     for k, v in enrolled.items()]
    zoo_names = [e["name"] for e in zoo.list_zoo()]
    active = STATE.ref or DEFAULT_ZOO_NAME
    if current_model not in classes:
        current_model = next(iter(enrolled), None) or next((c for c in classes if c != REAL), None)
    return (banner(att),
            gr.update(choices=classes, value=current_model),
            enrolled_rows,
            gr.update(choices=list(enrolled), value=next(iter(enrolled), None)),
            gr.update(value=export_zip(), interactive=att is not None and att.source is not None),
            gr.update(choices=sorted(set(zoo_names) | {active}), value=active),
            head_summary(att), head_card(att), zoo_table())


def load_ui(ref: str) -> str:
    try:
        att = load_head(ref)
        return f"Loaded {_code(att.name)} from {_code(att.source)}."
    except EXPECTED_ERRORS + (ImportError,) as exc:
        return _warn(str(exc))
    except Exception as exc:  # noqa: BLE001
        return _unexpected(exc)


# --------------------------------------------------------------------------- layout
BLACKBOX = "Black-box: a class of the active head"
WHITEBOX = "White-box: diffusers pipeline folder or Hub id"

CSS = """
.verdict h2 { margin-top: 0; }
#api-helpers { display: none; }
"""

INTRO = f"""# Which generative model made this image?
Upload an image: the app tells whether it is **real**, made by one of the **known generators**, or made by an
**unknown generator** (open-set). Teach it a new generator from a few images in **Enroll**, check one
generator in **Verify**, and switch models in **Zoo**. Uploads: up to {MAX_FILE_SIZE.upper()} per file; they are
deleted from the server within two hours (an enrollment keeps small thumbnails of its images in the head)."""

with gr.Blocks(title="Generator attribution", delete_cache=(3600, 3600)) as demo:
    gr.Markdown(INTRO)
    head_banner = gr.Markdown(elem_id="head-banner")

    with gr.Tab("Attribute", id="attribute") as attribute_tab:
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                attr_files = gr.File(label=f"Images or a .zip of images (up to {MAX_ATTRIBUTE_IMAGES})",
                                     file_count="multiple", file_types=UPLOAD_TYPES, elem_id="attr-files")
                with gr.Row():
                    attr_button = gr.Button("Attribute", variant="primary", elem_id="attr-button")
                    attr_clear = gr.ClearButton(value="Clear", elem_id="attr-clear")
                gr.Markdown("One image gives a verdict with scores and the most similar known examples; "
                            "several give a table you can download as CSV. Images under "
                            f"{MIN_IMAGE_SIZE} px on the short side are not judged.")
            with gr.Column(scale=2):
                attr_status = gr.Markdown("*Results appear here.*", elem_id="attr-status")
                with gr.Column(visible=False) as single_box:
                    with gr.Row():
                        attr_preview = gr.Image(label="Your image", type="pil", interactive=False, height=260,
                                                scale=1, buttons=[], format="png")
                        attr_verdict = gr.Markdown(elem_id="attr-verdict", elem_classes=["verdict"])
                    attr_scores = gr.Label(label="Probability per known source", num_top_classes=10,
                                           show_heading=False)
                    attr_nearest = gr.Gallery(label="Most similar known examples", columns=4, height=200,
                                              object_fit="contain", allow_preview=True)
                with gr.Column(visible=False) as batch_box:
                    attr_summary = gr.Markdown(elem_id="attr-summary")
                    attr_table = gr.Dataframe(headers=ATTRIBUTE_HEADER, interactive=False, wrap=True,
                                              elem_id="attr-table", max_height=420,
                                              column_widths=["38%", "18%", "12%", "12%", "20%"])
                    attr_csv = gr.DownloadButton("Download CSV", visible=False, elem_id="attr-csv")
        attr_clear.add([attr_files, attr_status, attr_preview, attr_verdict, attr_scores, attr_nearest,
                        attr_summary, attr_table])

    with gr.Tab("Enroll", id="enroll") as enroll_tab:
        gr.Markdown(f"Add a generator the head does not know yet from **{MIN_ENROLL_IMAGES} to {MAX_ENROLL_IMAGES}** "
                    "of its images (or a .zip). The backbone and the other sources stay as they are; it takes "
                    "seconds. The updated head is saved to your user zoo and survives restarts.")
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                enroll_name = gr.Textbox(label="Generator name", placeholder="e.g. Midjourney v6",
                                         info="letters, digits and spaces; stored as snake_case",
                                         elem_id="enroll-name")
                enroll_files_in = gr.File(label="Images of this generator", file_count="multiple",
                                       file_types=UPLOAD_TYPES, elem_id="enroll-files")
                enroll_button = gr.Button("Enroll", variant="primary", elem_id="enroll-button")
            with gr.Column(scale=1):
                enroll_status = gr.Markdown(elem_id="enroll-status")
                enrolled_table = gr.Dataframe(headers=["label", "name", "images", "enrolled at (UTC)"],
                                              label="Enrolled generators", interactive=False,
                                              elem_id="enrolled-table")
                with gr.Row():
                    remove_choice = gr.Dropdown(label="Enrolled generator", choices=[], scale=2)
                    remove_button = gr.Button("Remove", variant="stop", scale=1)
        with gr.Accordion("Share this head", open=False):
            with gr.Row():
                export_button = gr.DownloadButton("Export active head (.zip)", value=None)
            with gr.Row():
                push_repo = gr.Textbox(label="Hugging Face repo id", placeholder="your-name/my-attribution-head",
                                       scale=3)
                push_private = gr.Checkbox(label="private", value=True, scale=1)
                push_button = gr.Button("Push to the Hub", scale=1)
            push_status = gr.Markdown("Pushing needs the `HF_TOKEN` environment variable (a write token)."
                                      if not os.environ.get("HF_TOKEN") else "")

    with gr.Tab("Verify", id="verify") as verify_tab:
        gr.Markdown("Was each image made by one particular generator? **Black-box** compares the image with "
                    "what the active head knows about that generator. **White-box** needs the generator itself "
                    "(a latent-diffusion pipeline): it tries to reproduce the image with the model's decoder, "
                    "which is slow on CPU (minutes per image).")
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                verify_mode = gr.Radio([BLACKBOX, WHITEBOX], value=BLACKBOX, label="Mode")
                verify_model = gr.Dropdown(label="Generator", choices=[], elem_id="verify-model")
                with gr.Group(visible=False) as whitebox_box:
                    wb_source = gr.Textbox(label="Diffusers pipeline folder or Hub id",
                                           placeholder="/models/stable-diffusion-v1-5 or org/repo")
                    wb_steps = gr.Slider(0, 200, value=50, step=10, label="Inversion steps",
                                         info="a calibration file overrides this with the value it was made with")
                    wb_calibration = gr.File(label="Calibration file (attribution_whitebox.json, optional)",
                                             file_types=[".json"])
                verify_files_in = gr.File(label="Images to verify", file_count="multiple", file_types=UPLOAD_TYPES,
                                          elem_id="verify-files")
                verify_button = gr.Button("Verify", variant="primary", elem_id="verify-button")
            with gr.Column(scale=2):
                verify_summary = gr.Markdown(elem_id="verify-summary")
                verify_table = gr.Dataframe(headers=VERIFY_HEADER, interactive=False, wrap=True,
                                            elem_id="verify-table", column_widths=VERIFY_WIDTHS)

    with gr.Tab("Zoo", id="zoo") as zoo_tab:
        gr.Markdown("Choose the attribution head (the model) everyone using this app works with. Heads trained "
                    "on the same backbone switch instantly.")
        with gr.Row():
            zoo_choice = gr.Dropdown(label="Head", choices=[], allow_custom_value=True, scale=3,
                                     info="a name from the list, a folder, or hf-hub:org/repo")
            zoo_button = gr.Button("Load", variant="primary", scale=1)
        zoo_status = gr.Markdown()
        with gr.Row():
            zoo_info = gr.Markdown(elem_id="zoo-info")
            zoo_card = gr.Markdown(elem_id="zoo-card", max_height=500)
        zoo_list = gr.Dataframe(headers=["name", "location", "backbone", "classes", "error"], label="Available heads",
                                interactive=False)

    # API-only helpers: clean signatures for gradio_client, separate from the UI callbacks.
    with gr.Column(visible=False, elem_id="api-helpers"):
        api_image = gr.File(label="image", file_count="single")
        api_images = gr.File(label="images", file_count="multiple")
        api_name_in = gr.Textbox(label="name")
        api_model_in = gr.Textbox(label="model")
        api_out = gr.JSON(label="result")
        api_trigger = gr.Button("api")

    refresh_outputs = [head_banner, verify_model, enrolled_table, remove_choice, export_button, zoo_choice,
                       zoo_info, zoo_card, zoo_list]
    private = {"api_visibility": "private"}
    model_group = {"concurrency_id": "model", "concurrency_limit": 1}

    demo.load(refresh_all, inputs=verify_model, outputs=refresh_outputs, **private)
    for tab in (enroll_tab, verify_tab, zoo_tab):
        tab.select(refresh_all, inputs=verify_model, outputs=refresh_outputs, **private)

    attr_button.click(attribute_ui, inputs=attr_files,
                      outputs=[attr_status, single_box, attr_preview, attr_verdict, attr_scores, attr_nearest,
                               batch_box, attr_summary, attr_table, attr_csv], **private, **model_group)
    enroll_button.click(enroll_ui, inputs=[enroll_name, enroll_files_in], outputs=enroll_status, **private,
                        **model_group).then(refresh_all, inputs=verify_model, outputs=refresh_outputs, **private)
    remove_button.click(remove_ui, inputs=remove_choice, outputs=enroll_status, **private,
                        **model_group).then(refresh_all, inputs=verify_model, outputs=refresh_outputs, **private)
    push_button.click(push_ui, inputs=[push_repo, push_private], outputs=push_status, **private)
    verify_mode.change(lambda m: (gr.update(visible=m == WHITEBOX), gr.update(visible=m == BLACKBOX)),
                       inputs=verify_mode, outputs=[whitebox_box, verify_model], **private)
    verify_button.click(verify_ui, inputs=[verify_mode, verify_model, verify_files_in, wb_source, wb_steps,
                                           wb_calibration],
                        outputs=[verify_summary, verify_table], **private,
                        concurrency_id="verify", concurrency_limit=1)  # white-box runs for minutes
    zoo_button.click(load_ui, inputs=zoo_choice, outputs=zoo_status, **private,
                     **model_group).then(refresh_all, inputs=verify_model, outputs=refresh_outputs, **private)

    api_trigger.click(api_attribute, inputs=api_image, outputs=api_out, api_name="attribute", **model_group)
    api_trigger.click(api_enroll, inputs=[api_name_in, api_images], outputs=api_out, api_name="enroll",
                      **model_group)
    api_trigger.click(api_verify, inputs=[api_model_in, api_image], outputs=api_out, api_name="verify",
                      **model_group)

demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY)

LAUNCH_KWARGS: dict[str, Any] = {"max_file_size": MAX_FILE_SIZE, "css": CSS, "footer_links": ["api", "gradio"]}


# --------------------------------------------------------------------------- script entry point
def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Web app: which generative model made this image?")
    parser.add_argument("--zoo", default=os.environ.get("ATTRIBUTION_ZOO"),
                        help=f"head name, folder or hf-hub:org/repo (default: {DEFAULT_ZOO_NAME}; env ATTRIBUTION_ZOO)")
    parser.add_argument("--share", action="store_true", default=_env_flag("ATTRIBUTION_SHARE"),
                        help="ask gradio for a temporary public link (env ATTRIBUTION_SHARE=1)")
    args = parser.parse_args(argv)
    set_default_ref(args.zoo)
    try:
        att = warm_up()
        print(f"* Loaded head {att.name} from {att.source} ({len(att.classes)} classes)", flush=True)
    except ZooError as exc:
        print(f"warning: {exc}\n  The app starts anyway; choose a head in the Zoo tab.", file=sys.stderr, flush=True)
    demo.launch(share=args.share, prevent_thread_lock=True, **LAUNCH_KWARGS)
    if args.share and not demo.share_url:
        print(f"* No public link could be created (no network access to the gradio share server?). "
              f"The app keeps serving locally at {demo.local_url}", flush=True)
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
