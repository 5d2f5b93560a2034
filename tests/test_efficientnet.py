import numpy as np
import pytest
import torch
from PIL import Image

from attribution.backbones import create_backbone, list_backbones
from attribution.transform import PreprocessCfg, image_transform

skimage_data = pytest.importorskip("skimage.data")
ESPRESSO = 967  # ImageNet class index


@pytest.fixture(scope="module")
def backbone():
    return create_backbone("efficientnet_lite0:imagenet", layers=["blocks.2", "conv_head"])


def test_real_imagenet_weights_recognise_espresso(backbone):
    cfg = PreprocessCfg(size=224, resize_mode="resize", n_crops=1)
    x = image_transform(cfg)(Image.fromarray(skimage_data.coffee()))
    probs = backbone.classify(x).softmax(-1)[0]
    assert int(probs.argmax()) == ESPRESSO and probs[ESPRESSO] > 0.5


def test_features_are_normalised_and_layered(backbone):
    x = torch.randn(4, 3, 96, 96)
    f = backbone.encode(x, n_views=2)
    assert f.shape == (2, 40 + 1280) and f.dtype == torch.float32
    assert torch.allclose(f.norm(dim=1), torch.ones(2), atol=1e-5)
    parts = backbone._forward_layers(x)
    assert [p.shape[1] for p in parts] == [40, 1280]


def test_registry_and_errors():
    assert "efficientnet_lite2:imagenet" in list_backbones()
    with pytest.raises(ValueError, match="unknown layers"):
        create_backbone("efficientnet_lite0:imagenet", layers=["blocks.9"])
    with pytest.raises(ValueError, match="only the 'imagenet' weights"):
        create_backbone("efficientnet_lite0:laion")
    mstd = create_backbone("efficientnet_lite0:imagenet", layers=["blocks.1"], pool="meanstd")
    assert mstd.encode(torch.randn(1, 3, 64, 64)).shape == (1, 48)
    assert mstd.config()["pool"] == "meanstd"


def test_residual_spectra_see_periodic_traces():
    from attribution.backbones.forensic import RADIAL_BINS, residual_spectra

    rng = np.random.default_rng(0)
    smooth = torch.from_numpy(np.asarray(Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
                                         .resize((256, 256), Image.Resampling.BICUBIC), np.float32)).permute(2, 0, 1)
    grid = torch.zeros(256, 256)
    grid[:, ::4] = 6.0  # an upsampling-like trace: period 4 px -> half of Nyquist
    clean, traced = residual_spectra(torch.stack([smooth, smooth + grid]))["radial"]
    assert clean.shape == (RADIAL_BINS,)
    ring = RADIAL_BINS // 2  # |f| = 0.25 cycles/px is half of Nyquist (0.5)
    assert traced[ring] - clean[ring] > 2.0  # a peak of more than e^2 in power
    flat = residual_spectra(torch.full((1, 3, 64, 64), 128.0))
    assert flat["spectrum"].abs().max() < 1e-4  # no residual, no trace
    with pytest.raises(ValueError, match="multiple of 32"):
        residual_spectra(torch.zeros(1, 3, 50, 50))


def test_every_family_has_a_builder_and_raw_pixel_features_see_the_crop_itself():
    """The registry names each family once; backbones computing on raw pixels (spectra, residual CNN, the
    EfficientNet's spectrum layers) get the crop's own 0-255 values back from :meth:`Backbone.pixels`."""
    from attribution.backbones import BACKBONES
    from attribution.backbones.forensic import residual_spectra

    assert {"residual_spectra", "residual_cnn", "efficientnet_late", "efficientnet_lite0"} <= set(BACKBONES)
    arr = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    spectra = create_backbone("residual_spectra", preprocess_cfg={"size": 64, "n_crops": 1}, device="cpu")
    x = spectra.transform(Image.fromarray(arr))
    raw = torch.from_numpy(arr).permute(2, 0, 1)[None].float()
    assert torch.allclose(spectra.pixels(x), raw, atol=1e-3)
    direct = residual_spectra(raw)
    assert torch.allclose(torch.cat(spectra._forward_layers(x), dim=1),
                          torch.cat([direct["spectrum"], direct["radial"]], dim=1), atol=1e-4)


def test_forensic_layers_without_the_network():
    b = create_backbone("efficientnet_lite0:imagenet", layers=["radial"])
    assert b._last_block < 0 and b.encode(torch.randn(2, 3, 64, 64)).shape == (2, 48)


def test_set_preprocess_keeps_weights_and_changes_views(backbone):
    weights = next(backbone.model.parameters())
    before = backbone.preprocess_cfg
    backbone.set_preprocess(n_crops=1, size=64)
    try:
        assert backbone.transform.n_views == 1 and backbone.config()["preprocess_cfg"]["size"] == 64
        assert next(backbone.model.parameters()) is weights
    finally:
        backbone.set_preprocess(**before.to_dict())
    assert backbone.preprocess_cfg == before
