"""Duplicates of a head's own training and enrolled images: exact (pixels) and near (perceptual hash)."""
import io
import json
import shutil

import pytest
from PIL import Image

from conftest import make_image

from attribution import Attributor, ZooError, zoo
from attribution.constants import HASHES_NAME, NEAR_DUPLICATE_DISTANCE
from attribution.duplicates import ExemplarHashes, perceptual_hash
from attribution.transform import decode_image


@pytest.fixture(scope="module")
def attributor():
    return Attributor.from_pretrained()


def jpeg(path, quality=95) -> bytes:
    buf = io.BytesIO()
    decode_image(path).frames[0].save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def test_shipped_head_indexes_its_training_images(attributor):
    assert attributor.hashes is not None
    counts = {}
    for e in attributor.hashes.entries:
        counts[e["class"]] = counts.get(e["class"], 0) + 1
    training = attributor.config["training"]
    # every training sample, no more; a tiled class (grid g: g*g tiles per file) also indexes each whole file
    tiles = training.get("tiles", {})
    expected = {c: n + (n // tiles[c] ** 2 if c in tiles else 0) for c, n in training["class_counts"].items()}
    assert counts == expected
    assert set(attributor.head.bank_ids_) <= {e["id"] for e in attributor.hashes.entries}


def test_training_exemplar_resaved_as_jpeg95_is_a_near_duplicate(attributor, dev_data, tmp_path):
    exemplar = sorted((dev_data / "glid3_xl").iterdir())[5]
    (tmp_path / "resaved.jpg").write_bytes(jpeg(exemplar))
    shutil.copy(exemplar, tmp_path / "copy.png")
    resaved, copy = attributor([tmp_path / "resaved.jpg", tmp_path / "copy.png"])
    exemplar_id = f"glid3_xl/{exemplar.name}"
    assert resaved.duplicate_of["class"] == "glid3_xl" and resaved.duplicate_of["id"] == exemplar_id
    assert resaved.duplicate_of["match"] == "near" and resaved.duplicate_of["distance"] <= NEAR_DUPLICATE_DISTANCE
    assert copy.to_json()["duplicate_of"] == {"class": "glid3_xl", "id": exemplar_id, "match": "exact", "distance": 0}


def test_enrolled_dalle3_images_of_one_day_are_not_duplicates_of_each_other(attributor, dev_data, tmp_path):
    """Four DALL-E 3 images of one day share a prompt: enrolling three, the fourth is no duplicate,
    while a JPEG 95 copy of an enrolled one is."""
    day = sorted((dev_data / "dalle3").iterdir())[:4]
    assert len({p.name[:10] for p in day}) == 1
    worker = Attributor(attributor.backbone, attributor.head, attributor.config, hashes=attributor.hashes)
    worker.enroll("dalle3_again", day[:3])  # dalle3 is a class of the head; enrolled again under a new name
    (tmp_path / "enrolled_again.jpg").write_bytes(jpeg(day[1]))
    fourth, again = worker([day[3], tmp_path / "enrolled_again.jpg"])
    # the head was trained on every dev DALL-E 3 image: the fourth may match its own training copy, never
    # one of the three other images of its day
    assert fourth.error is None and fourth.duplicate_of in (None, {"class": "dalle3", "id": f"dalle3/{day[3].name}",
                                                                   "match": "exact", "distance": 0})
    assert again.duplicate_of["id"] in ("exemplars/dalle3_again/001.jpg", f"dalle3/{day[1].name}")
    assert len(worker.hashes) == len(attributor.hashes) + 3 and len(attributor.hashes) == len(worker.hashes) - 3


def test_index_is_saved_with_enrollment_and_dropped_with_removal(attributor, tmp_path):
    shots = [make_image(tmp_path / f"s{i}.png", seed=900 + i, size=256) for i in range(3)]
    worker = Attributor(attributor.backbone, attributor.head, attributor.config, source=attributor.source,
                        hashes=attributor.hashes)
    worker.enroll("gen x", shots, save_to=tmp_path / "head")
    saved = zoo.read_hashes(tmp_path / "head")
    assert len(saved) == len(attributor.hashes) + 3 and {e["class"] for e in saved.entries[-3:]} == {"gen_x"}
    assert json.loads((tmp_path / "head" / HASHES_NAME).read_text())["format"] == "attribution-exemplar-hashes/1"
    reloaded = Attributor.from_pretrained(tmp_path / "head", backbone=attributor.backbone)
    assert reloaded([shots[0]])[0].duplicate_of["match"] == "exact"
    reloaded.remove("gen_x", save_to=tmp_path / "head")
    assert len(zoo.read_hashes(tmp_path / "head")) == len(attributor.hashes)


def test_older_heads_without_an_index_report_no_duplicates(attributor, tmp_path, dev_data):
    old = tmp_path / "old-head"
    shutil.copytree(attributor.source, old)
    (old / HASHES_NAME).unlink()
    head = Attributor.from_pretrained(old, backbone=attributor.backbone)
    exemplar = sorted((dev_data / "real").iterdir())[0]
    assert head.hashes is None and head([exemplar])[0].duplicate_of is None
    (old / HASHES_NAME).write_text('{"format": "something else"}')
    with pytest.raises(ZooError, match=HASHES_NAME):
        Attributor.from_pretrained(old, backbone=attributor.backbone)


def test_index_file_round_trip_and_matching():
    images = [Image.effect_mandelbrot((256, 256), (-2 + i, -1.5, 1, 1.5), 50).convert("RGB") for i in range(2)]
    decoded = [decode_image(im) for im in images]
    hashes = ExemplarHashes([ExemplarHashes.entry(f"x/{i}.png", "gen", d.facts, perceptual_hash(d.frames[0]))
                             for i, d in enumerate(decoded)])
    again = ExemplarHashes.from_bytes(hashes.to_bytes())
    assert again.entries == hashes.entries
    assert again.match(decoded[1].facts, None) == {"class": "gen", "id": "x/1.png", "match": "exact", "distance": 0}
    resized = decode_image(images[0].resize((200, 200)))
    near = again.match(resized.facts, perceptual_hash(resized.frames[0]))
    assert near["id"] == "x/0.png" and near["match"] == "near"
    with pytest.raises(ValueError):
        ExemplarHashes.from_bytes(b'{"format": "attribution-exemplar-hashes/1", "exemplars": [{"id": 1}]}')


def test_zoo_index_rebuilds_an_index_from_the_training_data(attributor, tmp_path, capsys):
    from attribution import cli

    head = tmp_path / "head"
    shutil.copytree(attributor.source, head)
    data = tmp_path / "data"
    for label in ("real", "dalle_mini", "not_a_class"):
        (data / label).mkdir(parents=True)
        for i in range(2):
            make_image(data / label / f"{i}.png", seed=i, size=96)
    (data / "real" / "notes.txt").write_text("no image")
    before = {name: (head / name).read_bytes() for name in ("config.json", "model.safetensors")}
    assert cli.main(["zoo", "index", str(head), "--data", str(data), "--exclude", "real/1.png"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["class_counts"] == {"real": 1, "dalle_mini": 2} and summary["skipped_files"] == 1
    assert [e["id"] for e in zoo.read_hashes(head).entries] == ["dalle_mini/0.png", "dalle_mini/1.png", "real/0.png"]
    assert before == {name: (head / name).read_bytes() for name in before}  # the head itself is untouched
