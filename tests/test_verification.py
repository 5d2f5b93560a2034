"""The verifier factory (``load_verifier`` references and their errors), saved black-box verifiers, listing."""
import subprocess
import sys

import numpy as np
import pytest

from attribution import ZooError, list_zoo, zoo
from attribution.backbones import create_backbone
from attribution.features import FeatureExtractor
from attribution.heads import OpenSetHead
from attribution.verification import BlackBoxVerifier, list_verifiers, load_verifier
from conftest import REPO, make_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_scheme_runs_to_the_first_colon_and_the_class_follows_the_last_hash(monkeypatch):
    asked = []

    def load_head(ref):
        asked.append(ref)
        raise ZooError("not fetched in this test")

    monkeypatch.setattr(zoo, "load_head", load_head)
    for ref, head in (("blackbox:hf-hub:org/repo@rev#my_gen", "hf-hub:org/repo@rev"),
                      ("blackbox:local-dir:/a#b/c#my_gen", "local-dir:/a#b/c")):
        with pytest.raises(ZooError):
            load_verifier(ref)
        assert asked[-1] == head


@pytest.mark.parametrize("ref, error, match", [
    ("greybox:x", ValueError, "unknown verifier scheme 'greybox'"),
    ("blackbox:open-set-efficientnet-lite2", ValueError, r"blackbox:<head>#<class>"),
    ("blackbox:open-set-efficientnet-lite2#", ValueError, r"blackbox:<head>#<class>"),
    ("blackbox:open-set-efficientnet-lite2#no_such_class", ValueError, "unknown model 'no_such_class'; the head knows"),
    ("blackbox:no-such-head#real", ZooError, "no zoo head named 'no-such-head'"),
    ("occ-clip:", ValueError, "occ-clip: needs a saved verifier"),
    ("occ-clip:open-set-efficientnet-lite2", ZooError, "holds OpenSetHead, not OCCCLIPVerifier"),
    ("open-set-efficientnet-lite2", ZooError, "holds OpenSetHead, not a verifier"),
    ("whitebox:", ValueError, "whitebox: needs a diffusers pipeline"),
])
def test_clear_errors_for_bad_references(ref, error, match, user_home):
    with pytest.raises(error, match=match):
        load_verifier(ref)


@pytest.fixture(scope="module")
def spectra_verifier(tmp_path_factory):
    """A black-box verifier over the weight-free residual spectra, fitted on three kinds of images."""
    folder = tmp_path_factory.mktemp("images")
    images = {label: [make_image(folder / f"{label}{i}.png", seed=seed + i, size=96) for i in range(8)]
              for label, seed in (("a", 0), ("b", 100), ("c", 200))}
    extractor = FeatureExtractor(create_backbone("residual_spectra", preprocess_cfg={"size": 64, "n_crops": 1},
                                                 device="cpu"))
    X = extractor([p for paths in images.values() for p in paths]).features
    head = OpenSetHead(n_components=8).fit(X, np.repeat(list(images), 8))
    return BlackBoxVerifier(head, "b", extractor=extractor), images


def test_a_saved_blackbox_verifier_rebuilds_its_backbone(spectra_verifier, tmp_path, user_home):
    verifier, images = spectra_verifier
    probe = [images["b"][0], images["a"][1], make_image(tmp_path / "small.png", seed=5, size=48)]
    expected = [r.to_json() for r in verifier.verify(probe)]
    assert expected[2]["error_code"] == "too_small" and expected[0]["model"] == "b"
    folder = verifier.save_pretrained(user_home / "zoo" / "blackbox-b", {"name": "blackbox-b"})
    loaded = load_verifier(str(folder))
    assert loaded.extractor is None and [r.to_json() for r in loaded.verify(probe)] == expected
    assert load_verifier("blackbox-b", min_size=32).verify(probe)[2].error is None  # options reach its extractor
    # saved verifiers are listed as such, never as heads that fail to load
    assert [(e["name"], e["type"], e["model"]) for e in list_verifiers()] == [("blackbox-b", "BlackBoxVerifier", "b")]
    assert "blackbox-b" not in {e["name"] for e in list_zoo()}


@pytest.mark.parametrize("layout", ["format 2 without kind", "format 1"])
def test_verifiers_saved_before_kind_still_load_and_are_listed(layout, spectra_verifier, tmp_path, user_home):
    import json

    from attribution.constants import CONFIG_NAME

    verifier, images = spectra_verifier
    probe = [images["b"][0], images["a"][1]]
    expected = [r.to_json() for r in verifier.verify(probe)]
    folder = verifier.save_pretrained(user_home / "zoo" / "old-blackbox", {"name": "old-blackbox"})
    config = json.loads((folder / CONFIG_NAME).read_text())
    assert config.pop("kind") == "verifier"
    if layout == "format 1":  # the flat layout
        head, backbone = config.pop("head"), config.pop("backbone")
        config.update({"format_version": 1, "head": head["type"], "head_params": head["params"],
                       "head_state": head["state"], "backbone": backbone.pop("id"), **backbone})
    (folder / CONFIG_NAME).write_text(json.dumps(config))
    assert [r.to_json() for r in load_verifier("old-blackbox").verify(probe)] == expected
    assert [(e["name"], e["type"], e["model"]) for e in list_verifiers()] == [("old-blackbox", "BlackBoxVerifier", "b")]
    assert "old-blackbox" not in {e["name"] for e in list_zoo()}


def test_import_loads_neither_open_clip_nor_diffusers():
    code = ("import sys, attribution.verification as v; v.load_verifier; v.Verifier; v.BlackBoxVerifier; "
            "assert not {'open_clip', 'diffusers'} & set(sys.modules), 'imported too much'")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
