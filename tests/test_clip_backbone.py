"""CLIPBackbone on tiny random open_clip models saved to disk: every id form, the layers, the errors."""
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json

import huggingface_hub.constants
import open_clip
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from attribution.backbones import create_backbone
from attribution.backbones.clip import CLIPBackbone

TINY = "attribution-test-tiny-vit"
TINY_RN = "attribution-test-tiny-rn"
TEXT_CFG = {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}
TINY_CFG = {"embed_dim": 32, "text_cfg": TEXT_CFG,
            "vision_cfg": {"image_size": 64, "layers": 3, "width": 64, "head_width": 32, "patch_size": 16}}
TINY_RN_CFG = {"embed_dim": 32, "text_cfg": TEXT_CFG,
               "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "head_width": 32}}
HUB_PREPROCESS = {"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6], "interpolation": "bilinear"}
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("configs")
    for name, cfg in ((TINY, TINY_CFG), (TINY_RN, TINY_RN_CFG)):
        (folder / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder)


@pytest.fixture(scope="module")
def model(configs):
    torch.manual_seed(0)
    return open_clip.create_model(TINY).eval()


@pytest.fixture(scope="module")
def ckpt(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def _embed(model, x):
    with torch.no_grad():
        return F.normalize(model.encode_image(x), dim=1)


def _cls_after_block(model, x, i):
    """CLS token after resblock ``i``, by hand from the tower's modules."""
    v = model.visual
    with torch.no_grad():
        h = v.conv1(x).flatten(2).transpose(1, 2)
        h = torch.cat([v.class_embedding.expand(len(x), 1, -1), h], dim=1) + v.positional_embedding
        h = v.ln_pre(v.patch_dropout(h))
        batch_first = v.transformer.batch_first
        h = h if batch_first else h.transpose(0, 1)
        for block in v.transformer.resblocks[:i + 1]:
            h = block(h)
        return h[:, 0] if batch_first else h[0]


def _write_open_clip_dir(folder, model, weights_name=None):
    """``open_clip_config.json`` plus, when ``weights_name`` is given, the weights of ``model``."""
    folder.mkdir(parents=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CFG, "preprocess_cfg": HUB_PREPROCESS}))
    if weights_name is None:
        return
    if weights_name.endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / weights_name)
    else:
        torch.save(model.state_dict(), folder / weights_name)


def test_checkpoint_file_loads_its_weights(model, ckpt, x):
    backbone_id = f"{TINY}:{ckpt}"
    backbone = CLIPBackbone(backbone_id, layers=["embed"], device="cpu")
    assert backbone.id == backbone_id and backbone.config()["backbone"] == backbone_id
    torch.testing.assert_close(backbone.encode(x), _embed(model, x))
    fresh = open_clip.create_model(TINY).eval()  # random init: the comparison above can fail
    assert not torch.allclose(_embed(fresh, x), _embed(model, x), atol=1e-3)


def test_default_layers_and_preprocess(ckpt):
    backbone = CLIPBackbone(f"{TINY}:{ckpt}", device="cpu")
    assert backbone.layers == ("block.1", "block.2", "embed")
    assert backbone.dtype == torch.float32
    cfg = backbone.preprocess_cfg
    assert (cfg.size, cfg.interpolation, cfg.resize_mode, cfg.n_crops) == (64, "bicubic", "crop", 5)
    assert cfg.mean == pytest.approx(open_clip.OPENAI_DATASET_MEAN)


def test_local_dir(model, x, tmp_path):
    _write_open_clip_dir(tmp_path / "tiny", model, "open_clip_pytorch_model.bin")
    backbone = CLIPBackbone(f"local-dir:{tmp_path / 'tiny'}", layers=["embed"], device="cpu")
    torch.testing.assert_close(backbone.encode(x), _embed(model, x))
    cfg = backbone.preprocess_cfg
    assert (cfg.size, cfg.interpolation) == (64, "bilinear")
    assert cfg.mean == pytest.approx(HUB_PREPROCESS["mean"]) and cfg.std == pytest.approx(HUB_PREPROCESS["std"])


def test_hf_hub_from_offline_cache(model, x, tmp_path, monkeypatch):
    repo = tmp_path / "hub" / "models--org--tiny"
    _write_open_clip_dir(repo / "snapshots" / COMMIT, model, "open_clip_model.safetensors")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    backbone = CLIPBackbone("hf-hub:org/tiny", layers=["embed"], device="cpu")
    assert backbone.id == "hf-hub:org/tiny"
    torch.testing.assert_close(backbone.encode(x), _embed(model, x))
    assert backbone.preprocess_cfg.interpolation == "bilinear"
    with pytest.raises(RuntimeError, match="hf-hub:org/missing"):
        CLIPBackbone("hf-hub:org/missing", device="cpu")


def test_blocks_are_the_requested_ones(model, ckpt, x):
    backbone = CLIPBackbone(f"{TINY}:{ckpt}", layers=["block.1"], device="cpu")
    block1 = F.normalize(_cls_after_block(model, x, 1), dim=1)
    torch.testing.assert_close(backbone.encode(x), block1)
    assert not torch.allclose(block1, F.normalize(_cls_after_block(model, x, 0), dim=1), atol=1e-3)


def test_layers_come_back_in_requested_order(model, ckpt, x):
    backbone = CLIPBackbone(f"{TINY}:{ckpt}", layers=["embed", "block.2", "block.0"], device="cpu")
    with torch.no_grad():
        embed, block2, block0 = backbone._forward_layers(x)
    torch.testing.assert_close(F.normalize(embed, dim=1), _embed(model, x))
    torch.testing.assert_close(block2, _cls_after_block(model, x, 2))
    torch.testing.assert_close(block0, _cls_after_block(model, x, 0))
    assert backbone.encode(x).shape == (2, 32 + 64 + 64)


def test_registry_builds_it(model, ckpt, x):
    backbone = create_backbone(f"{TINY}:{ckpt}", layers=["embed"], device="cpu")
    assert isinstance(backbone, CLIPBackbone)
    torch.testing.assert_close(backbone.encode(x), _embed(model, x))


def test_non_vit_tower_offers_only_embed(configs, tmp_path):
    torch.manual_seed(0)
    resnet = open_clip.create_model(TINY_RN).eval()
    torch.save(resnet.state_dict(), tmp_path / "rn.pt")
    backbone = CLIPBackbone(f"{TINY_RN}:{tmp_path / 'rn.pt'}", device="cpu")
    assert backbone.layers == ("embed",)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(backbone.encode(x), _embed(resnet, x))
    with pytest.raises(ValueError, match="ModifiedResNet.*'embed'"):
        CLIPBackbone(f"{TINY_RN}:{tmp_path / 'rn.pt'}", layers=["block.0"], device="cpu")


@pytest.mark.parametrize("bad_id", ["ViT-B-32", "ViT-B-32:", ":openai"])
def test_malformed_id(bad_id):
    with pytest.raises(ValueError, match="pretrained tag or checkpoint"):
        CLIPBackbone(bad_id)


def test_unloadable_ids_name_the_id(configs, model, tmp_path):
    _write_open_clip_dir(tmp_path / "no-weights", model)  # must not fall back to random weights
    torch.save({"visual.proj": torch.zeros(1)}, tmp_path / "wrong.pt")
    for bad_id in ["no-such-model:openai", f"{TINY}:not-a-tag-or-file", f"{TINY}:{tmp_path / 'wrong.pt'}",
                   f"local-dir:{tmp_path / 'missing'}", f"local-dir:{tmp_path / 'no-weights'}"]:
        with pytest.raises(RuntimeError, match="cannot load CLIP backbone") as info:
            CLIPBackbone(bad_id, device="cpu")
        assert bad_id in str(info.value)


def test_bad_layer_lists_valid_ones(ckpt):
    with pytest.raises(ValueError, match=r"block\.3.*block\.2.*embed"):
        CLIPBackbone(f"{TINY}:{ckpt}", layers=["block.3"], device="cpu")
