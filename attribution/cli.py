"""Command line: ``python -m attribution predict|report|provenance|train|enroll|verify|fit-verifier|calibrate|zoo|
batch``. Calls the public API only; every sub-command's arguments are declared here.

The JSON lines printed by ``predict``, ``enroll`` and ``verify`` with ``--json`` are a public contract.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from .batch import ROWS_PER_FILE
from .constants import DEFAULT_BACKBONE, DEFAULT_ZOO_NAME, MIN_IMAGE_SIZE
from .inputs import InputFile, find_inputs

ZOO_HELP = "head name, folder or hf-hub:org/repo (default: the shipped head)"


class _StderrLog(logging.Handler):
    """The package's log records on stderr as ``<level>: <message>``, like the CLI's own warnings (``sys.stderr``
    read at each record, so a redirected stderr is followed)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(f"{record.levelname.lower()}: {record.getMessage()}", file=sys.stderr, flush=True)


def _log_to_stderr() -> None:
    """Show the library's warnings (``logging``, logger ``attribution``) on stderr, once per process."""
    logger = logging.getLogger(__package__)
    if not any(isinstance(handler, _StderrLog) for handler in logger.handlers):
        logger.addHandler(_StderrLog(logging.WARNING))


def _progress(desc: str, quiet: bool) -> Callable[[int, int], None] | None:
    """A ``(done, total)`` callback drawing a progress bar on stderr. The rate is images done over the time since
    the work began (this call, or the end of the previous bar), not since the first report: a first report of
    many images at once would otherwise read as hundreds of thousands of images per second."""
    if quiet:
        return None
    from tqdm import tqdm

    bar: dict[str, Any] = {"start": time.time()}

    def update(done: int, total: int) -> None:
        if "bar" not in bar:
            bar["bar"] = tqdm(total=total, desc=desc, unit="img", file=sys.stderr, leave=False, smoothing=0)
            bar["bar"].start_t = bar["start"]
        bar["bar"].n = done
        bar["bar"].refresh()
        if done >= total:
            bar.pop("bar").close()
            bar["start"] = time.time()

    return update


def expand_inputs(paths: Sequence[str]) -> list[InputFile]:
    """Files as given; folders walked recursively (every non-hidden file, sorted, judged by content). A folder
    holding no file is said on stderr (it gives no row: rows are files)."""
    found: list[InputFile] = []
    for path in paths:
        files = find_inputs([path])
        if not files and Path(path).is_dir():
            print(f"warning: no files in folder {path}", file=sys.stderr)
        found += files
    return found


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _provenance_reader(args: argparse.Namespace):
    """The provenance reader for ``--c2pa-trust-anchors``; anchors that cannot be used raise ValueError."""
    from .provenance import ProvenanceReader

    return ProvenanceReader(args.c2pa_trust_anchors)


def _load(args: argparse.Namespace):
    from .pipeline import Attributor

    return Attributor.from_pretrained(args.zoo, device=args.device, batch_size=args.batch_size,
                                      min_size=args.min_size)


def cmd_predict(args: argparse.Namespace) -> int:
    """Lines are written (and flushed) as each batch is done, in input order; exit 1 when an image failed
    (files found by walking a folder that are no image are skipped rows and do not count). ``--json`` lines
    carry the files' provenance evidence unless ``--no-provenance``."""
    provenance = _provenance_reader(args) if args.json and not args.no_provenance else None
    attributor = _load(args)
    files = expand_inputs(args.paths)
    failed = False
    if not args.json:
        width = max([len(str(Path(f).resolve())) for f in files] + [4])
        print(f"{'file':<{width}}  {'label':<24} {'most probable class':<32} {'synthetic score':>15}  {'unknown score':>13}  "
              "reason",
              flush=True)
    for o in attributor.stream(files, progress=_progress("predict", args.quiet), nearest=args.nearest,
                               provenance=provenance):
        failed |= o.error is not None and not o.skipped
        row = o.to_json()
        if args.json:
            _emit(row)
        elif o.error:
            print(f"{o.file:<{width}}  {'SKIPPED' if o.skipped else 'ERROR'} ({o.error_code}): {o.error}", flush=True)
        else:
            scores = row["scores"]
            top = max(scores, key=scores.get)  # may differ from the label (uncertain, unknown)
            synthetic = "-" if row["synthetic_score"] is None else f"{row['synthetic_score']:.4f}"
            print(f"{o.file:<{width}}  {o.label:<24} {f'{top} ({scores[top]:.3f})':<32} {synthetic:>15}  "
                  f"{row['unknown_score']:>13.4f}  {o.reason}", flush=True)
    return 1 if failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    """``report``: one self-contained HTML case report of the images (the ``predict --json`` rows, each file named
    as given, with the nearest known examples and provenance); exit 1 when an image failed, as ``predict``."""
    from .report import HeadInfo, render_report, report_image
    from .storage import write_bytes

    provenance = _provenance_reader(args)
    attributor = _load(args)
    files = expand_inputs(args.paths)
    rows, images = [], []
    for file, o in zip(files, attributor.stream(files, progress=_progress("report", args.quiet), nearest=args.nearest,
                                                provenance=provenance)):
        row = {**o.to_json(), "file": os.fspath(file)}
        rows.append(row)
        images.append(report_image(file, row, attributor.exemplar_image))
    out = write_bytes(args.out, render_report(rows, HeadInfo.of(attributor), images).encode("utf-8"))
    failed = sum(1 for r in rows if r.get("error") and not r.get("skipped"))
    print(json.dumps({"saved_to": str(Path(out).resolve()), "n_images": len(rows), "failed": failed}))
    return 1 if failed else 0


def cmd_provenance(args: argparse.Namespace) -> int:
    from .provenance import provenance_column

    reader = _provenance_reader(args)
    failed = False
    for file in expand_inputs(args.paths):
        path = str(Path(file).resolve())
        report = reader(path)
        failed |= report.reason is not None or report.error is not None
        if args.json:
            _emit({"file": path, **report.fields()})
            continue
        print(f"{path}: {provenance_column(report)}")
        for r in report.records:
            print(f"    {r.source:<8} {r.field:<32} {r.value}")
    return 1 if failed else 0


def verifier_ref(args: argparse.Namespace) -> str:
    """The :func:`~attribution.verification.load_verifier` reference that ``verify``'s flags name."""
    if args.model is not None:
        return f"blackbox:{args.zoo or DEFAULT_ZOO_NAME}#{args.model}"
    return f"whitebox:{args.whitebox}" if args.whitebox is not None else args.verifier


def cmd_verify(args: argparse.Namespace) -> int:
    """One line per input; exit 1 when an input failed (walked files that are no image excepted)."""
    from .verification import load_verifier

    files = expand_inputs(args.paths)
    verifier = load_verifier(verifier_ref(args), device=args.device, batch_size=args.batch_size,
                             min_size=args.min_size, steps=args.steps, calibration=args.calibration)
    outputs = verifier.verify(files, progress=_progress("verify", args.quiet))
    for o in outputs:
        if args.json:
            _emit(o.to_json())
        elif o.error:
            print(f"{o.file}  ERROR: {o.error}")
        else:
            rate = o.false_match_rate_at_score
            rate = "" if rate is None else f"  false-match rate at this score={rate:.4f}"
            print(f"{o.file}  {'MATCH' if o.match else 'no match'}  score={o.score:+.4f}{rate}")
    return 1 if any(o.error is not None and not o.skipped for o in outputs) else 0


def _warn_skipped(files: list[InputFile], errors: dict[int, str]) -> None:
    for position, error in sorted(errors.items()):
        print(f"warning: skipped {files[position]}: {error}", file=sys.stderr)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .verification.whitebox import CALIBRATION_DIR, WhiteBoxVerifier

    options = {"batch_size": args.batch_size} if args.batch_size else {}
    verifier = WhiteBoxVerifier.from_pretrained(args.pipeline, calibration=False, steps=args.steps, device=args.device,
                                                **options)
    progress = _progress("calibrate", args.quiet)
    if args.images:
        own = expand_inputs(args.images)
        batch = verifier.features(own, progress)
        _warn_skipped(own, batch.errors)
        if len(batch) < 2:
            raise ValueError(f"calibration needs at least 2 readable own images; got {len(batch)}")
        verifier.fit(batch.features)
        verifier.calibration_["source"] = "images"
    else:
        verifier.calibrate(n_samples=args.n_samples, progress=progress)
    folder = Path(args.out) if args.out else Path(args.pipeline) / CALIBRATION_DIR
    path = verifier.save_pretrained(folder, {"name": folder.name})
    print(json.dumps({"calibration": str(path.resolve()), "threshold": float(verifier.offset_),
                      "n_samples": verifier.calibration_["n_samples"], "steps": verifier.steps}))
    return 0


def cmd_fit_verifier(args: argparse.Namespace) -> int:
    """``fit-verifier occ-clip``: fit an OCC-CLIP verifier on images of the target and of other sources, save it."""
    from .names import normalize_label
    from .storage import user_zoo_dir
    from .verification import OCCCLIPVerifier

    target_files, negative_files = expand_inputs(args.target), expand_inputs(args.negatives)
    name = normalize_label(args.name or Path(args.target[0]).resolve().name)
    options = {"batch_size": args.batch_size} if args.batch_size else {}
    verifier = OCCCLIPVerifier.from_clip(args.backbone, target=name, steps=args.steps, n_ctx=args.n_ctx,
                                         false_match_rate=args.false_match_rate, device=args.device, **options)
    batches = []
    for files, what in ((target_files, "target"), (negative_files, "negatives")):
        batch = verifier.features(files, _progress(what, args.quiet))
        _warn_skipped(files, batch.errors)
        batches.append(batch)
    verifier.fit(batches[0].features, batches[1].features)
    folder = Path(args.out) if args.out else user_zoo_dir() / f"occ-clip-{name.replace('_', '-')}"
    verifier.save_pretrained(folder, {"name": folder.name})
    out = {"saved_to": str(folder.resolve()), "verifier": f"occ-clip:{folder}", "model": name,
           "n_target": len(batches[0]), "n_negatives": len(batches[1]),
           "false_match_rate": verifier.false_match_rate, "threshold": verifier.offset_,
           "skipped": sum(len(b.errors) for b in batches)}
    held_out = len(verifier.negative_scores_)
    if held_out * verifier.false_match_rate < 1:  # the threshold is a quantile of too few negatives
        needed = math.ceil(1 / (verifier.false_match_rate * verifier.calibration_fraction))
        out["warning"] = (f"only {held_out} held-out negatives set the threshold: it cannot hold a false-match rate "
                          f"below 1/{held_out}; give at least {needed} negative images for "
                          f"{verifier.false_match_rate:.0%}")
        print(f"warning: {out['warning']}", file=sys.stderr)
    print(json.dumps(out))
    return 0


ENROLL_REFUSED = 3  # exit status of ``enroll`` when the images look like a known class and --force is not given


def cmd_enroll(args: argparse.Namespace) -> int:
    from . import zoo

    attributor = _load(args)
    try:
        result = attributor.enroll(args.name, expand_inputs(args.paths), progress=_progress("enroll", args.quiet))
    except ValueError as exc:  # too few readable images, a name already known: said on stdout too for scripts
        if args.json:
            _emit({"name": args.name, "error": str(exc), "error_code": "not_enrolled"})
        raise
    refused = bool(result.warning) and not args.force
    if not refused:
        folder = Path(args.out) if args.out else zoo.user_zoo_dir() / zoo.derived_head_name(
            attributor.config["base_head"], list(attributor.config["enrolled"]))
        if not args.out and folder.exists():  # an earlier enrollment under the same name is never replaced silently
            message = (f"the user zoo already holds {folder.name!r} from an earlier enrollment; pass --out FOLDER "
                       f"to save this one elsewhere, or delete {folder} first")
            if args.json:
                _emit({"name": args.name, "error": message, "error_code": "not_enrolled"})
            print(f"error: {message}", file=sys.stderr)
            return 2
        result.saved_to = str(attributor.save_pretrained(folder).resolve())
    if args.json:
        _emit(result.to_json())
    else:
        print(f"enrolled {result.name!r} from {result.n_images} images in {result.seconds:.1f} s: expected recall "
              f"{result.expected_recall:.2f} (left out: {result.expected_real_or_uncertain:.0%} would be called real "
              f"or uncertain), closest known class {result.closest_class!r} "
              f"({result.closest_class_share:.0%} of the images)"
              + ("" if refused else f" -> head {Path(result.saved_to).name!r} ({result.saved_to})"))
    for f, e in result.errors.items():
        print(f"warning: skipped {f} ({result.error_codes[f]}): {e}", file=sys.stderr)
    if result.warning:
        print(f"warning: {result.warning}" + ("; not saved (--force saves it anyway)" if refused else ""),
              file=sys.stderr)
    return ENROLL_REFUSED if refused else 0


def cmd_train(args: argparse.Namespace) -> int:
    from .backbones import create_backbone
    from .dataset import parse_tiles
    from .features import FeatureCache
    from .heads import OpenSetHead
    from .training import train_head
    from . import zoo

    options = {"pool": args.pool} if args.pool else {}
    backbone = create_backbone(args.backbone, layers=args.layers, device=args.device, **options)
    backbone.set_preprocess(**{k: v for k, v in (("n_crops", args.crops), ("size", args.size)) if v})
    head = OpenSetHead(n_components=args.n_components, synthetic_probe=True, probe_loss=args.loss)
    cache = None if args.no_cache else FeatureCache(zoo.user_zoo_dir().parent / "features")
    result = train_head(backbone, args.data, head, progress=_progress("features", args.quiet),
                        batch_size=args.batch_size, tiles=parse_tiles(args.tile), augment=args.augment, cache=cache,
                        seed=args.seed)
    for f, e in result.skipped.items():
        print(f"warning: skipped {f}: {e}", file=sys.stderr)
    summary = {**result.summary, "data_root": os.path.relpath(Path(args.data).resolve(), Path(args.out).resolve())}
    out = zoo.save_pretrained(args.out, result.head, backbone.config(), hashes=result.hashes,
                              name=Path(args.out).name, training=summary)
    print(json.dumps({"saved_to": str(out.resolve()), "classes": result.head.classes_, **result.summary}))
    return 0


def cmd_train_forensic(args: argparse.Namespace) -> int:
    from .dataset import list_samples, parse_tiles
    from .recipes.crossfit import crossfit_folds, save_ensemble, train_ensemble
    from .recipes.residual_cnn import RecipeCfg, save_network, train_residual_cnn
    from .zoo import user_zoo_dir

    tiles = parse_tiles(args.tile)
    cfg = RecipeCfg(minutes=args.minutes, steps=args.steps, seed=args.seed, exclude=args.exclude or [], tiles=tiles,
                    loss=args.loss, sam=args.sam)
    log = (lambda message: None) if args.quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    cache = None if args.no_cache else user_zoo_dir().parent / "recipe"
    if args.folds > 1:
        together = dict(pair.split("=", 1) for pair in args.together or [])
        folds = crossfit_folds(list_samples(args.data, tiles), args.folds, together)
        model, config = train_ensemble(args.data, cfg, folds, device=args.device, cache=cache, log=log)
        out = save_ensemble(args.out, model, config)
        print(json.dumps({"saved_to": str(out.resolve()), "members": len(config["members"]),
                          "held_out": [m["held_out"] for m in config["members"]],
                          "seconds": round(sum(m["recipe"]["seconds"] for m in config["members"]), 1)}))
        return 0
    model, config = train_residual_cnn(args.data, cfg, device=args.device, cache=cache, log=log)
    out = save_network(args.out, model, config)
    print(json.dumps({"saved_to": str(out.resolve()), "classes": config["classes"], **config["recipe"]}))
    return 0


def cmd_zoo(args: argparse.Namespace) -> int:
    from . import zoo

    if args.zoo_command == "list":
        print(f"{'name':<48} {'origin':<8} {'base head':<32} details")
        for entry in zoo.list_zoo():
            detail = entry.get("error") or f"{entry['backbone']}  classes: {', '.join(entry['classes'])}"
            if entry["shadowed"]:
                detail += f"  (named like a shipped head: load it by path, {entry['path']})"
            print(f"{entry['name']:<48} {entry['origin']:<8} {entry.get('base_head') or '-':<32} {detail}")
        from .verification import list_verifiers

        for entry in list_verifiers():
            print(f"{entry['name']:<48} {entry['origin']:<8} {'-':<32} verifier {entry['type']} of "
                  f"{entry['model'] or '?'}: verify --verifier {entry['ref']}")
    elif args.zoo_command == "show":
        folder = zoo.resolve(args.ref)
        config = zoo.read_config(folder)
        hashes = zoo.read_hashes(folder)
        head = {k: v for k, v in config["head"].items() if k != "state"}
        print(json.dumps({"path": str(folder), **config, "head": head,
                          "duplicate_index": len(hashes) if hashes is not None else None}, indent=2))
    elif args.zoo_command == "index":
        return _index(args)
    elif args.zoo_command == "push":
        print(zoo.push_to_hub(args.ref, args.repo_id, token=args.token, private=args.private))
    return 0


def _index(args: argparse.Namespace) -> int:
    """``zoo index``: (re)build a head's duplicate index from the data it was trained on; enrolled classes'
    entries are kept."""
    from .duplicates import index_files
    from .dataset import list_dataset
    from . import zoo

    folder = zoo.resolve(args.ref)
    head, config = zoo.load_head(folder)
    enrolled = set(config.get("enrolled", {}))
    root = Path(args.data)
    files, labels = list_dataset(root)
    keep = [(f, y) for f, y in zip(files, labels) if y in head.classes_ and y not in enrolled
            and not any(fnmatch.fnmatch(Path(f).relative_to(root).as_posix(), p) for p in args.exclude)]
    hashes, skipped = index_files([f for f, _ in keep], [y for _, y in keep], root)
    for f, e in skipped.items():
        print(f"warning: skipped {f}: {e}", file=sys.stderr)
    old = zoo.read_hashes(folder)
    hashes = hashes.extended(e for e in (old.entries if old else []) if e["class"] in enrolled)
    counts: dict[str, int] = {}
    for e in hashes.entries:
        counts[e["class"]] = counts.get(e["class"], 0) + 1
    trained = config.get("training", {}).get("class_counts", {})
    for label, n in trained.items():
        if counts.get(label, 0) != n:
            print(f"warning: {label}: {counts.get(label, 0)} images indexed, the head was trained on {n}",
                  file=sys.stderr)
    zoo.save_hashes(folder, hashes)
    print(json.dumps({"saved_to": str((folder / zoo.HASHES_NAME).resolve()), "n_images": len(hashes),
                      "class_counts": counts, "skipped_files": len(skipped)}))
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    """``batch``: prints one JSON summary line; exit 1 when some image failed."""
    from .batch import run_batch

    try:
        result = run_batch(args.input, args.output, args.zoo, address=args.address, workers=args.workers,
                           batch_size=args.batch_size, gpus_per_worker=args.gpus_per_worker,
                           cpus_per_worker=args.cpus_per_worker, rows_per_file=args.rows_per_file,
                           retry_errors=not args.skip_errors, quiet=args.quiet,
                           provenance=None if args.no_provenance else _provenance_reader(args))
    except Exception as exc:
        if type(exc).__module__.split(".")[0] == "ray":  # a cluster failure: reported like other errors
            raise RuntimeError(f"the Ray job failed: {exc}") from exc
        raise
    _emit(result.to_json())
    return 1 if result.errors else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m attribution", description="Which generative model made this image?")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, zoo_arg: bool = True) -> None:
        if zoo_arg:
            p.add_argument("--zoo", default=None, help=ZOO_HELP)
        p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
        p.add_argument("--batch-size", type=int, default=16)
        p.add_argument("--quiet", action="store_true", help="no progress bar")

    def trust_anchors(p: argparse.ArgumentParser) -> None:
        p.add_argument("--c2pa-trust-anchors", default=None, metavar="PEM",
                       help="CA certificates (PEM) whose C2PA signers count as trusted; without it none does")

    def min_size(p: argparse.ArgumentParser, default: int | None = MIN_IMAGE_SIZE,
                 default_help: str = str(MIN_IMAGE_SIZE)) -> None:
        p.add_argument("--min-size", type=int, default=default,
                       help=f"smallest short side judged, in px (default {default_help}); smaller: a too_small error")

    p = sub.add_parser("predict", help="attribute images: real, a known generator or unknown")
    common(p)
    min_size(p)
    p.add_argument("--json", action="store_true", help="one JSON object per line per image")
    p.add_argument("--nearest", type=int, default=0, help="also list the K nearest known exemplars")
    p.add_argument("--no-provenance", action="store_true",
                   help="do not add the file's provenance evidence (C2PA, XMP, PNG text, EXIF) to --json lines")
    trust_anchors(p)
    p.add_argument("paths", nargs="+", help="image files or folders (recursive)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("report", help="one self-contained HTML case report of images (prints like a PDF)")
    common(p)
    min_size(p)
    p.add_argument("--out", required=True, help="the HTML file to write, e.g. report.html")
    p.add_argument("--nearest", type=int, default=4, help="nearest known examples shown per image (default 4)")
    trust_anchors(p)
    p.add_argument("paths", nargs="+", help="image files or folders (recursive)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("provenance", help="what the files' own metadata says about their origin (not the verdict)")
    p.add_argument("--json", action="store_true", help="one JSON object per line per image")
    trust_anchors(p)
    p.add_argument("paths", nargs="+", help="image files or folders (recursive)")
    p.set_defaults(func=cmd_provenance)

    p = sub.add_parser("verify", help="was each image made by this model?")
    common(p)
    min_size(p, None, f"{MIN_IMAGE_SIZE} for black-box; OCC-CLIP and white-box take any size their model takes")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--model", help="a class of the --zoo head (black-box)")
    target.add_argument("--whitebox", help="diffusers pipeline or VAE folder / Hub id (white-box)")
    target.add_argument("--verifier", metavar="REF", help="blackbox:<head>#<class>, occ-clip:<folder>, "
                        "whitebox:<pipeline>, or a saved verifier's name or folder")
    p.add_argument("--calibration", default=None,
                   help="white-box calibration: a folder saved by calibrate (or an earlier .json)")
    p.add_argument("--steps", type=int, default=50, help="white-box inversion steps (a calibration fixes them)")
    p.add_argument("--json", action="store_true")
    p.add_argument("paths", nargs="+")
    p.set_defaults(func=cmd_verify, batch_size=None)  # each verifier's own batch size unless --batch-size

    p = sub.add_parser("fit-verifier", help="fit a verifier from sample images and save it (OCC-CLIP)")
    p.add_argument("kind", choices=["occ-clip"], help="occ-clip: learnt CLIP prompts (Liu et al. 2024)")
    p.add_argument("--backbone", required=True, help="CLIP id: name:tag, name:/path/ckpt, hf-hub:org/repo or "
                                                     "local-dir:/path (pretrained weights needed to be useful)")
    p.add_argument("--target", nargs="+", required=True, help="images or folders of the target generator")
    p.add_argument("--negatives", nargs="+", required=True,
                   help="images or folders of other sources (real photos, other generators)")
    p.add_argument("--name", default=None, help="the target's name (default: the first --target folder's name)")
    p.add_argument("--out", default=None, help="folder to save it in (default: the user zoo, occ-clip-<name>)")
    p.add_argument("--steps", type=int, default=100, help="prompt-learning steps")
    p.add_argument("--n-ctx", type=int, default=8, help="learnt context vectors per prompt")
    p.add_argument("--false-match-rate", type=float, default=0.01,
                   help="share of held-out negatives the threshold lets match")
    common(p, zoo_arg=False)
    p.set_defaults(func=cmd_fit_verifier, batch_size=None)

    p = sub.add_parser("enroll", help="add a generator from a few of its images; writes a new head")
    common(p)
    min_size(p)
    p.add_argument("--name", required=True, help="generator name, e.g. midjourney_v6")
    p.add_argument("--out", default=None,
                   help="folder of the new head (default: the user zoo, named <base head>-with-<generator>)")
    p.add_argument("--force", action="store_true",
                   help="save even when half or more of the images look like one known class (p >= 0.8)")
    p.add_argument("--json", action="store_true")
    p.add_argument("paths", nargs="+")
    p.set_defaults(func=cmd_enroll)

    p = sub.add_parser("calibrate", help="white-box: set a diffusers model's threshold from its own samples")
    p.add_argument("pipeline", help="diffusers pipeline or VAE folder / Hub id")
    p.add_argument("--out", default=None,
                   help="calibration folder (default: attribution_whitebox/ inside the pipeline folder)")
    p.add_argument("--n-samples", type=int, default=16, help="own samples generated when no --images are given")
    p.add_argument("--steps", type=int, default=50, help="inversion steps (verify uses the same)")
    p.add_argument("--images", nargs="+", default=None, help="the model's own images or folders (optional)")
    common(p, zoo_arg=False)
    p.set_defaults(func=cmd_calibrate, batch_size=None)

    p = sub.add_parser("train", help="fit a head on a folder-per-class dataset")
    common(p, zoo_arg=False)
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, help=f"backbone id (default {DEFAULT_BACKBONE})")
    p.add_argument("--data", required=True, help="folder with one sub-folder per class, incl. 'real'")
    p.add_argument("--out", required=True)
    p.add_argument("--layers", nargs="+", default=None)
    p.add_argument("--pool", default=None, choices=["mean", "meanstd"])
    p.add_argument("--crops", type=int, default=None, help="native-resolution crops per image")
    p.add_argument("--size", type=int, default=None, help="crop size in pixels")
    p.add_argument("--n-components", type=int, default=384)
    p.add_argument("--tile", nargs="*", default=None, metavar="CLASS=N",
                   help="cut every file of CLASS into an N x N grid of samples (e.g. flux1_dev=2)")
    p.add_argument("--augment", type=int, default=2,
                   help="changed copies of every image also fitted (re-encoded, resized, cropped; default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the changed copies")
    p.add_argument("--loss", default="logistic", choices=["logistic", "robust"],
                   help="synthetic probe loss: logistic regression, or CVaR + AUC with sharpness-aware "
                        "minimisation (Santosh et al. 2024; measured worse here, see README)")
    p.add_argument("--no-cache", action="store_true", help="do not keep features in the user cache folder")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("train-forensic", help="train the residual CNN feature source (recipe in its config.json)")
    p.add_argument("--data", required=True, help="folder with one sub-folder per class, incl. 'real'")
    p.add_argument("--out", required=True, help="folder of the network, e.g. zoo/residual-cnn")
    p.add_argument("--steps", type=int, default=1500, help="training steps (batches of 64 patches)")
    p.add_argument("--minutes", type=float, default=40.0, help="time cap of the training loop")
    p.add_argument("--no-cache", action="store_true", help="make the twins again instead of reading them from the cache")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--exclude", nargs="*", help="classes or real sources (real/<prefix>) to leave out")
    p.add_argument("--tile", nargs="*", default=None, metavar="CLASS=N",
                   help="cut every file of CLASS into an N x N grid of samples (e.g. flux1_dev=2 for 2x2 grids)")
    p.add_argument("--folds", type=int, default=1,
                   help="train one network per fold, each without its fold (generators and real sources held out "
                        "whole), saved as one cross-fitted ensemble; 1: a single network")
    p.add_argument("--loss", default="ce", choices=["ce", "robust"],
                   help="ce: cross-entropy; robust: CVaR + AUC loss (Santosh et al. 2024)")
    p.add_argument("--sam", action="store_true", help="sharpness-aware minimisation (about twice the time a step)")
    p.add_argument("--together", nargs="*", default=None, metavar="SOURCE=GENERATOR",
                   help="hold real source SOURCE out in the fold of GENERATOR (e.g. ffhq=stylegan2_faces)")
    p.add_argument("--device", default=None)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train_forensic)

    p = sub.add_parser("zoo", help="list, show or publish heads")
    zsub = p.add_subparsers(dest="zoo_command", required=True)
    zsub.add_parser("list")
    s = zsub.add_parser("show")
    s.add_argument("ref")
    s = zsub.add_parser("index", help="(re)build a head's duplicate index from its training data")
    s.add_argument("ref", help="head name or folder (written in place)")
    s.add_argument("--data", required=True, help="the folder-per-class dataset the head was trained on")
    s.add_argument("--exclude", nargs="*", default=[], help="glob patterns of data files (relative to --data) "
                                                            "the head was not trained on, e.g. 'real/new__*'")
    s = zsub.add_parser("push")
    s.add_argument("ref")
    s.add_argument("repo_id")
    s.add_argument("--token", default=None)
    s.add_argument("--private", action="store_true")
    p.set_defaults(func=cmd_zoo)

    p = sub.add_parser("batch", help="attribute many images on a Ray cluster into a Parquet dataset",
                       description="Attribute a folder, glob or manifest of images with Ray Data. "
                                   "Needs: pip install -r requirements-ray.txt")
    p.add_argument("--zoo", default=None, help=ZOO_HELP)
    p.add_argument("--input", nargs="+", required=True,
                   help="folders (recursive), globs, files, or .parquet/.csv manifests with a 'path' column")
    p.add_argument("--output", required=True, help="Parquet dataset folder (e.g. out.parquet/); resumed if it exists")
    p.add_argument("--address", default=None,
                   help="Ray cluster: 'auto', 'ray://host:10001' or 'local' (default: $RAY_ADDRESS, else local)")
    p.add_argument("--workers", type=int, default=1, help="model workers (actors), each loading the model once")
    p.add_argument("--batch-size", type=int, default=16, help="images per model call")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per model worker (0: CPU)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs (torch threads) per CPU model worker")
    p.add_argument("--rows-per-file", type=int, default=ROWS_PER_FILE, help="rows per output part file")
    p.add_argument("--skip-errors", action="store_true", help="do not retry files recorded with an error")
    p.add_argument("--no-provenance", action="store_true",
                   help="do not add the files' provenance evidence (C2PA, XMP, PNG text, EXIF) to the rows")
    trust_anchors(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars or Ray Data logs")
    p.set_defaults(func=cmd_batch)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _log_to_stderr()
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except (ValueError, RuntimeError, OSError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
