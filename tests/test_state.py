"""A visitor's stored enrollments are untrusted input: signed, validated, keyed to their head (no backbone needed)."""
import base64
import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from attribution.enrollment import enrollment_report, head_fingerprint
from attribution.head_folder import exemplar_ids
from attribution.heads import OpenSetHead
from attribution_app import state as st
from test_heads import DIM, make_classes

BACKBONE = {"backbone": "efficientnet_lite0:imagenet"}


@pytest.fixture(scope="module")
def setup():
    X, y = make_classes([120, 100, 100, 30, 30], seed=31, n_classes=5)
    base = OpenSetHead(n_components=DIM).fit(X[y < "g3"], y[y < "g3"])
    return base, head_fingerprint(base, BACKBONE), X, y


def jpeg(seed, size=160):
    """A noisy JPEG thumbnail as the input stage makes them (noise: the hardest to keep small)."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
        buf, format="JPEG", quality=85)
    return buf.getvalue()


def enroll(base, state, fingerprint, X, label, thumbnails=None):
    """``state`` plus ``label`` enrolled from ``X``; with ``thumbnails``, as ``Attributor.enroll`` names its exemplars
    and keeps their thumbnails."""
    ids = exemplar_ids(label, len(X)) if thumbnails else None
    head = base.with_deltas([e.delta for e in state.active(fingerprint)]).enroll(X, label, ids=ids)
    r = enrollment_report(base, X, label)
    info = {"display_name": label.upper(), "n_images": len(X), "enrolled_at": "2025-01-02T03:04:05Z",
            "expected_recall": r.expected_recall, "closest_class": r.closest_class,
            "closest_class_share": r.closest_class_share}
    return state.add(st.Enrollment.from_head(head, label, info, thumbnails), fingerprint)


@pytest.fixture
def visitor(setup, monkeypatch):
    monkeypatch.setenv("ATTRIBUTION_SECRET", "s3cret")
    base, fp, X, y = setup
    state = enroll(base, st.VisitorState(), fp, X[y == "g3"][:6], "g3")
    return enroll(base, state, fp, X[y == "g4"][:5], "g4")


def test_round_trip_rebuilds_the_same_head(setup, visitor):
    base, fp, X, _ = setup
    stored = st.encode(visitor)
    assert set(stored) == {"data", "sig"} and len(json.dumps(stored)) < 60_000  # small: deltas, not heads
    back = st.decode(json.loads(json.dumps(stored)), fp, DIM)
    assert back.labels == ["g3", "g4"] and back.notice is None
    same = base.with_deltas([e.delta for e in back.enrollments])
    live = base.with_deltas([e.delta for e in visitor.enrollments])
    for name, value in live.state_dict().items():
        assert np.array_equal(same.state_dict()[name], value), name
    assert back.enrollments[1].info() == visitor.enrollments[1].info()


def test_tampered_state_is_rejected_cleanly(setup, visitor):
    _, fp, _, _ = setup
    stored = st.encode(visitor)
    payload = json.loads(stored["data"])
    payload["enrollments"][0]["bias"] = 50.0  # make g3 win everything
    forged = {"data": json.dumps(payload, sort_keys=True, separators=(",", ":")), "sig": stored["sig"]}
    unsigned, wrong_types = {"data": stored["data"]}, {"data": 1, "sig": 2}
    for bad in (forged, {**stored, "sig": "0" * 64}, unsigned, "garbage", [1, 2], wrong_types):
        with pytest.raises(st.StateError):
            st.decode(bad, fp, DIM)
        restored = st.load_stored(bad, fp, DIM)
        assert restored.enrollments == () and "not loaded" in restored.notice
    assert "could not be verified" in st.load_stored(forged, fp, DIM).notice


def test_a_state_signed_with_another_secret_is_foreign(setup, visitor, monkeypatch):
    _, fp, _, _ = setup
    stored = st.encode(visitor)
    monkeypatch.setenv("ATTRIBUTION_SECRET", "another-server")
    assert "could not be verified" in st.load_stored(stored, fp, DIM).notice


def test_validly_signed_but_malformed_state_is_rejected(setup, visitor):
    _, fp, _, _ = setup
    payload = json.loads(st.encode(visitor)["data"])

    def signed(change):
        p = json.loads(json.dumps(payload))
        change(p)
        data = json.dumps(p, sort_keys=True, separators=(",", ":"))
        return {"data": data, "sig": st._sign(data)}

    nan_mean = base64.b64encode(np.full(DIM, np.nan).tobytes()).decode()
    for change, message in [
            (lambda p: p["enrollments"][0].update(label="../../etc"), "generator name"),
            (lambda p: p["enrollments"][0].update(label="unknown"), "generator name"),
            (lambda p: p["enrollments"][0].update(mean=nan_mean), "class mean"),
            (lambda p: p["enrollments"][0].update(mean="AAAA"), "wrong size"),
            (lambda p: p["enrollments"][0].update(bank_rows=10_000), "exemplar count"),
            (lambda p: p["enrollments"][0].update(count=1e9), "image count"),
            (lambda p: p["enrollments"][0].update(display_name="x" * 500), "display name"),
            (lambda p: p["enrollments"][0].update(enrolled_at="<script>"), "date"),
            (lambda p: p["enrollments"].append(p["enrollments"][0]), "twice"),
            (lambda p: p.update(enrollments=p["enrollments"] * 6), "malformed"),
            (lambda p: p.update(version=99), "unknown format")]:
        with pytest.raises(st.StateError, match=message):
            st.decode(signed(change), fp, DIM)


def signed_copy(stored, change):
    """``stored`` with its payload changed by ``change`` and signed again (validly signed, so only validation can
    refuse it)."""
    payload = json.loads(stored["data"])
    change(payload)
    data = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return {"data": data, "sig": st._sign(data)}


@pytest.fixture
def pictured(setup, visitor):
    """``visitor`` plus a third generator ``g5`` enrolled with a thumbnail per image, as the app enrolls."""
    base, fp, X, y = setup
    shots = X[y == "g4"][5:11]
    thumbnails = {i: jpeg(k) for k, i in enumerate(exemplar_ids("g5", len(shots)))}
    return enroll(base, visitor, fp, shots, "g5", thumbnails)


def test_thumbnails_of_enrolled_images_are_kept_small_signed_and_only_for_their_head(setup, pictured):
    base, fp, _, _ = setup
    mine = pictured.enrollments[-1]
    assert mine.delta.ids == tuple(exemplar_ids("g5", 6)) and len(mine.thumbnails) == 6
    for t in mine.thumbnails:
        assert len(t) <= st.MAX_THUMBNAIL_BYTES and max(Image.open(io.BytesIO(t)).size) <= st.THUMBNAIL_PX
    back = st.decode(json.loads(json.dumps(st.encode(pictured))), fp, DIM)
    assert back.enrollments[-1].thumbnails == mine.thumbnails
    assert back.thumbnails(fp) == dict(zip(exemplar_ids("g5", 6), mine.thumbnails))  # the ids the head gives them
    assert base.with_deltas([e.delta for e in back.enrollments]).bank_ids_[-6:] == exemplar_ids("g5", 6)
    assert back.thumbnails("another head") == {}
    tampered = json.loads(st.encode(pictured)["data"])
    tampered["enrollments"][-1]["thumbnails"][0] = base64.b64encode(jpeg(99)).decode()
    forged = {"data": json.dumps(tampered, sort_keys=True, separators=(",", ":")), "sig": st.encode(pictured)["sig"]}
    with pytest.raises(st.StateError, match="could not be verified"):
        st.decode(forged, fp, DIM)


def test_malformed_or_oversized_thumbnails_are_refused(setup, pictured):
    _, fp, _, _ = setup
    stored = st.encode(pictured)
    good = json.loads(stored["data"])["enrollments"][-1]["thumbnails"][0]
    big = base64.b64encode(b"\xff\xd8\xff" + bytes(st.MAX_THUMBNAIL_BYTES)).decode()

    def thumbs(value):
        return lambda p: p["enrollments"][-1].update(thumbnails=value)

    for change, message in [(thumbs(good), "invalid number of thumbnails"),
                            (thumbs([good] * 7), "invalid number of thumbnails"),  # more than the 6 exemplars
                            (thumbs([big]), "invalid thumbnail"),
                            (thumbs([base64.b64encode(b"<svg onload=x>").decode()]), "invalid thumbnail"),
                            (thumbs(["not base64!"]), "invalid thumbnail"),
                            (thumbs([7]), "invalid thumbnail"),
                            (thumbs(["A" * (st.MAX_THUMBNAIL_CHARS + 4)]), "too large")]:
        with pytest.raises(st.StateError, match=message):
            st.decode(signed_copy(stored, change), fp, DIM)
        assert "not loaded" in st.load_stored(signed_copy(stored, change), fp, DIM).notice


def test_an_enrollment_that_would_not_fit_the_stored_limit_is_refused(setup, visitor, monkeypatch):
    base, fp, X, y = setup
    monkeypatch.setattr(st, "MAX_STORED_CHARS", len(st.encode(visitor)["data"]) + 1000)
    thumbnails = {i: jpeg(k) for k, i in enumerate(exemplar_ids("g5", 6))}
    with pytest.raises(st.StateError, match="too large to keep"):
        enroll(base, visitor, fp, X[y == "g4"][5:11], "g5", thumbnails)


def test_enrollments_stored_before_thumbnails_were_kept_still_load(setup, pictured):
    """An entry of version 1 as stored before this change (no ``thumbnails``) loads, with no pictures."""
    base, fp, X, _ = setup
    old = signed_copy(st.encode(pictured), lambda p: [e.pop("thumbnails") for e in p["enrollments"]])
    assert json.loads(old["data"])["version"] == 1
    back = st.decode(old, fp, DIM)
    assert back.labels == ["g3", "g4", "g5"] and back.thumbnails(fp) == {}
    same = base.with_deltas([e.delta for e in back.enrollments])
    assert np.array_equal(same.predict(X), base.with_deltas([e.delta for e in pictured.enrollments]).predict(X))


def test_state_for_another_head_is_kept_aside_with_a_notice(setup, visitor):
    base, fp, X, y = setup
    other = OpenSetHead(n_components=DIM).fit(X[y < "g4"], y[y < "g4"])
    restored = st.load_stored(st.encode(visitor), head_fingerprint(other, BACKBONE), DIM)
    assert restored.labels == ["g3", "g4"] and not restored.active(head_fingerprint(other, BACKBONE))
    assert "another head" in restored.notice and "g3, g4" in restored.notice
    # enrolling on the new head drops them
    assert restored.stale(head_fingerprint(other, BACKBONE))


def test_remove_touches_only_your_own(visitor):
    assert visitor.remove("g3").labels == ["g4"]
    with pytest.raises(st.StateError, match="not one of your enrolled"):
        visitor.remove("g0")  # a class of the served head
    assert st.encode(visitor.remove("g3").remove("g4")) == {}


def test_export_and_import_zip(setup, visitor, tmp_path):
    base, fp, X, y = setup
    archive = tmp_path / "mine.zip"
    archive.write_bytes(st.export_zip(visitor))
    with zipfile.ZipFile(archive) as zf:
        assert set(zf.namelist()) == {"enrollments.json", "README.txt"}
    partial = visitor.remove("g4")
    merged, message = st.import_zip(str(archive), partial, fp, DIM)
    assert merged.labels == ["g3", "g4"] and "g4" in message and "already enrolled: g3" in message
    fresh, _ = st.import_zip(str(archive), st.VisitorState(), fp, DIM)
    assert fresh.labels == ["g3", "g4"]
    other_fp = head_fingerprint(OpenSetHead(n_components=DIM).fit(X[y < "g4"], y[y < "g4"]), BACKBONE)
    with pytest.raises(st.StateError, match="another head"):
        st.import_zip(str(archive), st.VisitorState(), other_fp, DIM)
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(st.StateError, match="not an enrollment export"):
        st.import_zip(str(tmp_path / "bad.zip"), st.VisitorState(), fp, DIM)
    with pytest.raises(st.StateError, match="no enrollments"):
        st.export_zip(st.VisitorState())


def test_api_sessions_are_separate_and_bounded():
    store = st.SessionStore(max_sessions=2)
    a = st.VisitorState(head="h")
    store.put("one", a)
    store.put("two", st.VisitorState())
    store.put("three", st.VisitorState())
    assert store.get("one") == st.VisitorState() and store.get("two") == st.VisitorState()
    store.put("three", a)
    assert store.get("three") is a and store.get(None) == st.VisitorState()
    with pytest.raises(st.StateError, match="session"):
        store.put(None, a)
