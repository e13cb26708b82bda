"""Parity of the LIA renderer with the official code (parity README: ref_renderer.npz, "Renderer checkpoint").

The full-size random-weight checkpoint is rebuilt bit for bit by the golden set's ``make_lia_ckpt.py`` (run with the
venv python and ``--check``) into a cache keyed by the manifest, checksums, script and seed. Everything is read from
the golden set, so another set with the same layout (DYSTREAM_PARITY_DIR) works too.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from avatar.renderer import MODULE_NAMES, Renderer, RendererConfig, convert_renderer_to_safetensors, load_renderer
from avatar.renderer.renderer import to_uint8
from avatar.weights.reader import CheckpointError
from config.settings import DEFAULT_CACHE, get_settings

CACHE_DIR = DEFAULT_CACHE / "parity"
ATOL = RTOL = 1e-4


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    path = get_settings().parity_dir.expanduser().resolve()
    needed = [
        "manifest_renderer.json",
        "lia_ckpt_sha256.json",
        "make_lia_ckpt.py",
        "config.json",
        "inputs.npz",
        "ref_renderer.npz",
        "ref_generation.npz",
    ]
    missing = [name for name in needed if not (path / name).is_file()]
    if missing:
        pytest.fail(f"parity golden set incomplete at {path} (missing {missing}): set DYSTREAM_PARITY_DIR")
    return path


def build_parity_checkpoint(parity_dir: Path) -> Path:
    """The golden set's renderer checkpoint, built once per (manifest, checksums, script, seed) and cached."""
    seed = int(json.loads((parity_dir / "config.json").read_text())["renderer"]["weights_seed"])
    digest = hashlib.sha256(str(seed).encode())
    for name in ("manifest_renderer.json", "lia_ckpt_sha256.json", "make_lia_ckpt.py"):
        digest.update((parity_dir / name).read_bytes())
    out = CACHE_DIR / f"lia_random-{digest.hexdigest()[:16]}.ckpt"
    if out.is_file():
        return out
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
    cmd = [
        sys.executable,
        str(parity_dir / "make_lia_ckpt.py"),
        "--manifest", str(parity_dir / "manifest_renderer.json"),
        "--seed", str(seed),
        "--out", str(tmp),
        "--check", str(parity_dir / "lia_ckpt_sha256.json"),
    ]  # fmt: skip
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            pytest.fail(f"make_lia_ckpt.py failed (rc {done.returncode}):\n{done.stdout}\n{done.stderr}")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


@pytest.fixture(scope="session")
def checkpoint(parity_dir: Path) -> Path:
    return build_parity_checkpoint(parity_dir)


@pytest.fixture(scope="module")
def ref(parity_dir: Path) -> dict[str, np.ndarray]:
    with np.load(parity_dir / "ref_renderer.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def renderer(checkpoint: Path) -> Renderer:
    return load_renderer(checkpoint)


@pytest.fixture(scope="module")
def portrait(parity_dir: Path, renderer: Renderer) -> tuple[torch.Tensor, torch.Tensor]:
    with np.load(parity_dir / "inputs.npz") as f:
        rgb = f["ref_image_uint8"]
    x = torch.from_numpy(rgb).permute(2, 0, 1).float().div(255)[None]  # ToTensor
    return renderer.encode_portrait((x - 0.5) / 0.5)  # Normalize(0.5, 0.5)


@pytest.fixture(scope="module")
def rendered(
    ref: dict[str, np.ndarray], renderer: Renderer, portrait: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    source = torch.from_numpy(ref["source_latent"])[None]
    targets = torch.from_numpy(ref["target_latents"])
    return renderer.render_with_internals(source, targets, portrait[1])


def test_key_names_shapes_and_order_match_manifest(parity_dir: Path) -> None:
    manifest = json.loads((parity_dir / "manifest_renderer.json").read_text())
    assert tuple(manifest["checkpoint_key_prefixes"]) == MODULE_NAMES
    with torch.device("meta"):
        model = Renderer(RendererConfig())
    for name in MODULE_NAMES:
        expected = manifest["modules"][name]
        module = getattr(model, name)
        ours = module.state_dict()
        assert list(ours) == list(expected["state_dict"]), name
        params = dict(module.named_parameters())
        for key, info in expected["state_dict"].items():
            assert list(ours[key].shape) == info["shape"], key
            assert str(ours[key].dtype) == info["dtype"], key
            assert (key in params) == (info["kind"] == "param"), key
        assert sum(p.numel() for p in params.values()) == expected["n_parameter_elements"], name
        assert len(ours) == expected["n_state_dict_tensors"], name
    assert "face_generator.identity_grid" not in model.state_dict()


def test_reference_latents_follow_app_convention(parity_dir: Path, ref: dict[str, np.ndarray]) -> None:
    """Flow source = first generated latent; targets = generated latents at frame_indices."""
    with np.load(parity_dir / "ref_generation.npz") as f:
        latents = f["motion_latents"]
    np.testing.assert_array_equal(ref["target_latents"], latents[ref["frame_indices"]])
    np.testing.assert_array_equal(ref["source_latent"], latents[int(ref["source_index"])])


@pytest.mark.slow
def test_portrait_encoding(ref: dict[str, np.ndarray], portrait: tuple[torch.Tensor, torch.Tensor]) -> None:
    m0, f_app = portrait
    np.testing.assert_allclose(m0.numpy(), ref["m0"], atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(f_app[0].numpy(), ref["f_app"], atol=ATOL, rtol=RTOL)


@pytest.mark.slow
def test_rendered_frames(ref: dict[str, np.ndarray], rendered: tuple[torch.Tensor, dict[str, torch.Tensor]]) -> None:
    frames, internals = rendered
    np.testing.assert_allclose(internals["flow_latent"].numpy(), ref["flow_latents"], atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(internals["conv2_out"][0].numpy(), ref["frame0_conv2_out"], atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(
        internals["occlusion_logits"][0].numpy(), ref["frame0_occlusion_logits"], atol=ATOL, rtol=RTOL
    )
    np.testing.assert_allclose(frames[0].numpy(), ref["frame0_float"], atol=2e-3, rtol=0)

    got = to_uint8(frames)
    assert got.shape == ref["frames_uint8"].shape and got.dtype == np.uint8
    diff = np.abs(got.astype(np.int16) - ref["frames_uint8"].astype(np.int16))
    assert diff.max() <= 2
    assert (diff > 0).mean() <= 0.01


@pytest.mark.slow
def test_safetensors_conversion_loads_the_same_weights(checkpoint: Path, renderer: Renderer, tmp_path: Path) -> None:
    out = convert_renderer_to_safetensors(checkpoint, tmp_path / "lia.safetensors")
    converted = load_renderer(out)
    ours = renderer.state_dict()
    theirs = converted.state_dict()
    assert list(theirs) == list(ours)
    for key, value in ours.items():
        assert torch.equal(theirs[key], value), key


@pytest.mark.slow
def test_loader_names_missing_and_misshaped_keys(checkpoint: Path, tmp_path: Path) -> None:
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state = ckpt["state_dict"]

    missing_key = "face_generator.G_middle_3.conv_1.weight_u"
    broken = dict(ckpt, state_dict={k: v for k, v in state.items() if k != missing_key})
    path = tmp_path / "missing.ckpt"
    torch.save(broken, path)
    with pytest.raises(CheckpointError, match=missing_key) as err:
        load_renderer(path)
    assert str(path) in str(err.value)

    bad_key = "flow_estimator.direction.weight"
    broken = dict(ckpt, state_dict={**state, bad_key: torch.zeros(512, 32)})
    path = tmp_path / "misshaped.ckpt"
    torch.save(broken, path)
    with pytest.raises(CheckpointError, match=bad_key) as err:
        load_renderer(path)
    assert str(path) in str(err.value) and "(512, 32)" in str(err.value) and "(512, 64)" in str(err.value)
