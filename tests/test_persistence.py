"""The one way to save: atomic writes, the folder lock, the mixin's files, bytes and format upgrades."""
import io
import json
import os
import stat
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from attribution.constants import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME
from attribution.heads import OpenSetHead
from attribution.persistence import config_kind, saved_kind, upgrade_config
from attribution.storage import ZooError, atomic_path, folder_lock, write_bytes


def fitted_head():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(m, 1, (30, 6)) for m in range(3)])
    return OpenSetHead(n_components=6).fit(X, np.repeat(["real", "a", "b"], 30)), X


def test_atomic_path_keeps_the_old_file_when_the_write_fails(tmp_path):
    target = write_bytes(tmp_path / "f.json", b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]
    write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(os.stat(target).st_mode) & 0o044  # readable by others, as any new file (umask 022)


def test_folder_lock_is_reentrant_in_a_thread_and_exclusive_across_threads(tmp_path):
    order = []

    def take() -> None:
        with folder_lock(tmp_path / "h"):
            order.append("other")

    with folder_lock(tmp_path / "h"):
        with folder_lock(tmp_path / "h"):  # a save inside a locked read-modify-write does not wait on itself
            other = threading.Thread(target=take)
            other.start()
            other.join(0.3)
            order.append("first")
    other.join(5)
    assert order == ["first", "other"]


def test_save_pretrained_writes_sorted_config_safetensors_and_keeps_an_existing_card(tmp_path):
    head, X = fitted_head()
    folder = head.save_pretrained(tmp_path / "h", {"name": "h", "classes": head.classes_})
    text = (folder / CONFIG_NAME).read_text()
    config = json.loads(text)
    assert text == json.dumps(config, indent=2, sort_keys=True) + "\n"
    assert config["format_version"] == 2 and config["head"]["type"] == "OpenSetHead"
    assert (folder / WEIGHTS_NAME).read_bytes()[:8] != b"\x80\x04\x95"  # not a pickle
    assert stat.S_IMODE(os.stat(folder / WEIGHTS_NAME).st_mode) & 0o044
    (folder / CARD_NAME).write_text("my own card")
    head.save_pretrained(folder, {"name": "h", "classes": head.classes_})
    assert (folder / CARD_NAME).read_text() == "my own card"
    loaded = OpenSetHead.from_pretrained(folder)
    assert np.array_equal(loaded.predict_proba(X), head.predict_proba(X))


def test_bytes_round_trip_is_exact_and_refuses_anything_else():
    head, X = fitted_head()
    data = head.to_bytes({"classes": head.classes_})
    assert data == head.to_bytes({"classes": head.classes_})  # deterministic
    loaded = OpenSetHead.from_bytes(data)
    for key, value in head.state_dict().items():
        assert np.array_equal(value, loaded.state_dict()[key])
    assert np.array_equal(loaded.decide(X).labels, head.decide(X).labels)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(CONFIG_NAME, json.dumps(head.to_config({"classes": head.classes_})))
        zf.writestr(WEIGHTS_NAME, b"garbage")
    for bad in (b"", b"not a zip", head.to_bytes()[:100], buffer.getvalue()):
        with pytest.raises(ZooError):
            OpenSetHead.from_bytes(bad)


def test_format_1_configs_are_nested_and_newer_ones_refused():
    v1 = {"format_version": 1, "head": "OpenSetHead", "head_params": {"n_components": 4}, "head_state": {"x": 1},
          "backbone": "efficientnet_lite0:imagenet", "layers": ["blocks.6"], "pool": "mean",
          "preprocess_cfg": {"size": 224}, "classes": ["real", "a"], "name": "old"}
    up = upgrade_config(v1)
    assert up["head"] == {"type": "OpenSetHead", "params": {"n_components": 4}, "state": {"x": 1}}
    assert up["backbone"] == {"id": "efficientnet_lite0:imagenet", "layers": ["blocks.6"], "pool": "mean"}
    assert up["preprocess_cfg"] == {"size": 224} and up["name"] == "old" and up["upgraded_from"] == 1
    with pytest.raises(ZooError, match="newer"):
        upgrade_config({**v1, "format_version": 99})


def test_a_folder_in_the_working_directory_loads_by_relative_path(tmp_path, monkeypatch, user_home):
    from attribution import zoo

    head, X = fitted_head()
    zoo.save_pretrained(tmp_path / "my-head", head, {"backbone": "efficientnet_lite0:imagenet", "layers": ["blocks.6"],
                                                      "preprocess_cfg": {}})
    monkeypatch.chdir(tmp_path)
    for ref in ("./my-head", "local-dir:my-head", Path("my-head"), Path("./my-head")):
        loaded, _ = zoo.load_head(ref)  # a Path stays a folder even when it reads like a zoo name
        assert np.array_equal(loaded.decide(X).labels, head.decide(X).labels)
    with pytest.raises(ZooError, match="no zoo head named 'my-head'"):
        zoo.load_head("my-head")  # a bare name is a zoo name
    network = tmp_path / "net"
    network.mkdir()
    (network / CONFIG_NAME).write_text(json.dumps({"network": "ResidualCNN", "classes": ["real", "a"]}))
    with pytest.raises(ZooError, match="feature network 'ResidualCNN', not a head"):
        zoo.load_head(network)


@pytest.mark.parametrize("config, kind", [
    ({"format_version": 2, "kind": "head", "head": {"type": "OpenSetHead"}}, "head"),
    ({"format_version": 2, "kind": "verifier", "head": {"type": "BlackBoxVerifier"}}, "verifier"),
    ({"kind": "network", "network": "ResidualCNN"}, "network"),
    # saved before ``kind`` existed: told by the layout
    ({"format_version": 2, "head": {"type": "OpenSetHead", "params": {}, "state": {}}}, "head"),
    ({"format_version": 2, "head": {"type": "WhiteBoxVerifier", "params": {}, "state": {}}}, "verifier"),
    ({"format_version": 1, "head": "OpenSetHead", "head_params": {}, "head_state": {}}, "head"),
    ({"format_version": 2, "head": "OCCCLIPVerifier", "head_params": {}}, "verifier"),  # flat, as OCC-CLIP wrote it
    ({"network": "ResidualCNN", "classes": ["real", "a"]}, "network"),
    ({"format_version": 2, "head": {"type": "SomethingElse"}}, None),
    ({"format_version": 2}, None),
])
def test_config_kind_reads_kind_or_tells_it_from_older_layouts(config, kind):
    assert config_kind(config) == kind


def test_every_saved_folder_says_what_it_is(tmp_path):
    from attribution.verification import BlackBoxVerifier

    head, _ = fitted_head()
    saved = {"head": head.save_pretrained(tmp_path / "h", {"classes": head.classes_}),
             "verifier": BlackBoxVerifier(head, "a").save_pretrained(tmp_path / "v")}
    for kind, folder in saved.items():
        assert json.loads((folder / CONFIG_NAME).read_text())["kind"] == kind
    assert saved_kind(saved["head"]) == ("head", "OpenSetHead", head.get_params())
    assert saved_kind(saved["verifier"]) == ("verifier", "BlackBoxVerifier", {"label": "a"})
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / CONFIG_NAME).write_text("{not json")
    assert saved_kind(tmp_path / "broken") == (None, None, {}) == saved_kind(tmp_path / "missing")


def test_a_saved_network_says_it_is_one_and_older_networks_are_told_too(tmp_path):
    from attribution.backbones.residual_cnn import ResidualCNN, load_network
    from attribution.recipes.residual_cnn import save_network

    config = {"network": "ResidualCNN", "classes": ["real", "a"], "widths": [4, 4], "strides": [1, 2],
              "recipe": {"steps": 0}}
    folder = save_network(tmp_path / "net", ResidualCNN(2, [4, 4], [1, 2]), config)
    saved = json.loads((folder / CONFIG_NAME).read_text())
    assert saved["kind"] == "network" and saved_kind(folder) == ("network", "ResidualCNN", {})
    (folder / CONFIG_NAME).write_text(json.dumps({k: v for k, v in saved.items() if k != "kind"}))
    assert saved_kind(folder).kind == "network"  # saved before ``kind`` existed
    assert load_network(str(folder))[1]["classes"] == ["real", "a"]
