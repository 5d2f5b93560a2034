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
