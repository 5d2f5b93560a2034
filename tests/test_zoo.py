import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from attribution import zoo
from attribution.constants import CONFIG_NAME, WEIGHTS_NAME
from attribution.heads import OpenSetHead
from attribution.persistence import saved_kind

BACKBONE_CFG = {"backbone": "efficientnet_lite0:imagenet", "layers": ["blocks.6"],
                "preprocess_cfg": {"size": 224, "n_crops": 1}, "pool": "mean"}


def fitted_head(seed=0):
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(m, 1, (30, 16)) for m in range(3)])
    return OpenSetHead(n_components=8).fit(X, np.repeat(["real", "gen_a", "gen_b"], 30)), X


def assert_same(a, b):
    for key, value in a.state_dict().items():
        assert np.array_equal(value, b.state_dict()[key]), key
        assert value.dtype == b.state_dict()[key].dtype
    assert a.meta_dict() == b.meta_dict() and a.get_params() == b.get_params()


def test_round_trip_from_path_and_name(tmp_path, user_home):
    head, X = fitted_head()
    folder = zoo.save_pretrained(zoo.user_zoo_dir() / "my-head", head, BACKBONE_CFG, name="my-head")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", CONFIG_NAME, WEIGHTS_NAME]
    by_path, config = zoo.load_head(str(folder))
    by_name, _ = zoo.load_head("my-head")
    by_local_dir, _ = zoo.load_head(f"local-dir:{folder}")
    for loaded in (by_path, by_name, by_local_dir):
        assert_same(head, loaded)
        assert np.array_equal(loaded.predict_proba(X), head.predict_proba(X))
    assert config["backbone"] == {"id": BACKBONE_CFG["backbone"], "layers": ["blocks.6"], "pool": "mean"}
    assert config["preprocess_cfg"] == BACKBONE_CFG["preprocess_cfg"] and config["classes"] == head.classes_
    assert config["format_version"] == 2 and config["head"]["type"] == "OpenSetHead"
    assert "my-head" in [h["name"] for h in zoo.list_zoo()]
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: attribution") and "`gen_a`" in card


def test_round_trip_from_hub_cache(tmp_path, monkeypatch):
    """An ``hf-hub:`` id resolves from a Hub cache layout with HF_HUB_OFFLINE=1, through huggingface_hub."""
    head, _ = fitted_head(1)
    src = zoo.save_pretrained(tmp_path / "src", head, BACKBONE_CFG)
    cache = tmp_path / "hub"
    snap = cache / "models--org--attr-head" / "snapshots" / ("a" * 40)
    shutil.copytree(src, snap)
    (cache / "models--org--attr-head" / "refs").mkdir()
    (cache / "models--org--attr-head" / "refs" / "main").write_text("a" * 40)
    import huggingface_hub.constants as hc

    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    loaded, _ = zoo.load_head("hf-hub:org/attr-head")
    assert_same(head, loaded)
    with pytest.raises(zoo.ZooError, match="hf-hub:org/missing"):
        zoo.load_head("hf-hub:org/missing")


def test_refuses_pickle_and_bad_configs(tmp_path):
    head, _ = fitted_head()
    folder = zoo.save_pretrained(tmp_path / "h", head, BACKBONE_CFG)
    config = json.loads((folder / CONFIG_NAME).read_text())
    for change, message in [({"weights": "model.bin"}, "pickle is refused"),
                            ({"format_version": 99}, "newer than this library"),
                            ({"head": {**config["head"], "type": "EvilHead"}}, "unknown head type"),
                            ({"head": "OpenSetHead"}, "'head' with 'type'"),
                            ({"classes": "real"}, "'classes'")]:
        (folder / CONFIG_NAME).write_text(json.dumps({**config, **change}))
        with pytest.raises(zoo.ZooError, match=message):
            zoo.load_head(folder)
    (folder / CONFIG_NAME).write_text("{not json")
    with pytest.raises(zoo.ZooError, match="unreadable"):
        zoo.load_head(folder)
    (folder / CONFIG_NAME).write_text(json.dumps(config))
    (folder / WEIGHTS_NAME).write_bytes(b"garbage")
    with pytest.raises(zoo.ZooError, match="unreadable model.safetensors"):
        zoo.load_head(folder)


@pytest.mark.parametrize("name", ["../etc", "/abs/path", "a/b", "..", "Ünïcode", ""])
def test_bad_head_names(name, user_home):
    with pytest.raises((ValueError, zoo.ZooError)):
        zoo.resolve(name) if "/" not in name else zoo.validate_config({}, name)


def test_interrupted_swap_recovers_previous_version(tmp_path):
    head, _ = fitted_head()
    folder = zoo.save_pretrained(tmp_path / "h", head, BACKBONE_CFG)
    os.rename(folder, tmp_path / ".h.old-123")  # a crash between the two renames of a swap
    loaded, _ = zoo.load_head(str(folder))
    assert_same(head, loaded)


WRITER = """
import sys, numpy as np
from attribution import zoo
from attribution.heads import OpenSetHead
rng = np.random.default_rng(0)
X = np.concatenate([rng.normal(m, 1, (400, 512)) for m in range(3)])
head = OpenSetHead(n_components=64, bank_size=400).fit(X, np.repeat(["real", "a", "b"], 400))
cfg = {"backbone": "efficientnet_lite0:imagenet", "layers": ["blocks.6"], "preprocess_cfg": {}}
print("ready", flush=True)
i = 0
while True:
    i += 1
    zoo.save_pretrained(sys.argv[1], head, cfg, generation=i)
"""


def test_kill_9_while_writing_leaves_a_loadable_head(tmp_path):
    head, _ = fitted_head()
    target = tmp_path / "h"
    zoo.save_pretrained(target, head, BACKBONE_CFG, generation=0)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE,
                            cwd=Path(__file__).resolve().parent.parent)
    assert proc.stdout.readline().strip() == b"ready"
    for delay in (0.05, 0.13, 0.21, 0.34):
        time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    loaded, config = zoo.load_head(str(target))  # old or new version, never a mix
    assert config["classes"] == list(loaded.classes_)
    assert loaded.projection_.shape[0] in (16, 512)


def test_user_heads_never_shadow_shipped_ones(user_home):
    """Shipped heads resolve first, a user head cannot take a shipped name, and both are listed with their origin."""
    from huggingface_hub.utils import validate_repo_id

    head, _ = fitted_head()
    shipped = sorted(p.name for p in zoo.SHIPPED_ZOO.iterdir() if (p / CONFIG_NAME).is_file())
    with pytest.raises(zoo.ZooError, match="name of a shipped head"):
        zoo.save_pretrained(zoo.user_zoo_dir() / shipped[0], head, BACKBONE_CFG)
    derived = zoo.derived_head_name(shipped[0], ["my_gen"])
    assert derived == f"{shipped[0]}-with-my_gen"
    long = zoo.derived_head_name(shipped[0], [f"generator_{i}" * 3 for i in range(4)])
    for name in (derived, long):
        validate_repo_id(f"org/{name}")  # valid as a Hub repo name too
        assert len(name) <= 96
    zoo.save_pretrained(zoo.user_zoo_dir() / derived, head, BACKBONE_CFG, base_head=shipped[0])
    # a user head left by an older version under a shipped name is listed, but never loaded by that name
    legacy = zoo.user_zoo_dir() / shipped[0]
    legacy.mkdir(parents=True)
    for item in (zoo.user_zoo_dir() / derived).iterdir():
        shutil.copy2(item, legacy / item.name)
    assert zoo.resolve(shipped[0]) == zoo.SHIPPED_ZOO / shipped[0]
    entries = {(e["name"], e["origin"]): e for e in zoo.list_zoo()}
    assert entries[(derived, "user")]["base_head"] == shipped[0]
    assert entries[(shipped[0], "shipped")]["shadowed"] is False and entries[(shipped[0], "user")]["shadowed"] is True


def as_format_1(config):
    """A current head config in the flat layout of ``format_version`` 1 (thresholds where higher is worse)."""
    head, backbone = config["head"], config["backbone"]
    state = {**head["state"], "offset_": -head["state"]["offset_"],
             "distance_offset_": -head["state"]["distance_offset_"]}
    return {"format_version": 1, "head": head["type"], "head_params": head["params"], "head_state": state,
            "backbone": backbone["id"], **{k: v for k, v in backbone.items() if k != "id"},
            "preprocess_cfg": config["preprocess_cfg"], "classes": config["classes"], "name": config.get("name")}


@pytest.mark.parametrize("layout", ["format 2 without kind", "format 1"])
def test_heads_saved_before_kind_still_load_and_are_listed(layout, user_home):
    head, X = fitted_head()
    folder = zoo.save_pretrained(zoo.user_zoo_dir() / "old-head", head, BACKBONE_CFG, name="old-head")
    config = json.loads((folder / CONFIG_NAME).read_text())
    assert config.pop("kind") == "head"
    (folder / CONFIG_NAME).write_text(json.dumps(as_format_1(config) if layout == "format 1" else config))
    assert saved_kind(folder).kind == "head"
    loaded, _ = zoo.load_head("old-head")
    assert np.array_equal(loaded.predict_proba(X), head.predict_proba(X))
    [entry] = [e for e in zoo.list_zoo() if e["name"] == "old-head"]
    assert "error" not in entry and entry["head"] == "OpenSetHead"
    zoo.save_pretrained(folder, loaded, BACKBONE_CFG)  # saved again: current format, with its kind
    assert json.loads((folder / CONFIG_NAME).read_text())["kind"] == "head"


@pytest.mark.parametrize("with_kind", [True, False])
def test_networks_are_never_listed_or_offered_as_heads(with_kind, user_home):
    network = zoo.user_zoo_dir() / "my-network"
    network.mkdir(parents=True)
    config = {"network": "ResidualCNN", "classes": ["real", "a"], **({"kind": "network"} if with_kind else {})}
    (network / CONFIG_NAME).write_text(json.dumps(config))
    assert "my-network" not in {e["name"] for e in zoo.list_zoo()}
    with pytest.raises(zoo.ZooError, match="no zoo head named 'nothing'; available: ") as error:
        zoo.load_head("nothing")
    assert "my-network" not in str(error.value)


def test_the_shipped_card_names_no_place_on_the_trainers_disk():
    from attribution.heads.card import model_card

    config = zoo.read_config(zoo.resolve("open-set-efficientnet-lite2"))
    assert config["training"]["data_root"]  # kept in the config, for finding the pictures of known examples
    card = model_card(config)
    assert config["training"]["data_root"] not in card and "data_root" not in card
