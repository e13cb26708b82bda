"""The motion generator against the official golden outputs (parity README: ref_audio, ref_window, ref_flow_head,
ref_generation, the checkpoint layout and the full-size manifest), at the README's tolerances.

Every size is read from the golden set's config.json or checkpoint, so another golden set (DYSTREAM_PARITY_DIR)
with other dimensions, seed and clip length runs the same tests.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from avatar.motion.audio import SAMPLES_PER_FRAME, input_values, to_25fps, wav2vec_frames
from avatar.motion.checkpoints import infer_motion_config, load_motion_generator, random_motion_generator
from avatar.motion.config import WAV2VEC2_BASE_960H, MotionConfig
from avatar.motion.generator import MotionGenerator
from avatar.offline import GenerationTrace, generate, num_output_frames
from avatar.sampling.cfg import BRANCHES_5, CfgScales, branch_gates
from avatar.sampling.sampler import SampleTrace, euler_step, flow_match_schedule, sample_latent
from avatar.weights.reader import read_weights

pytestmark = pytest.mark.usefixtures("torch_single_thread")

# README "Tolerances" (fp32 CPU re-implementation).
TIGHT = {"atol": 1e-4, "rtol": 1e-4}
AUTOREGRESSIVE = {"atol": 5e-4, "rtol": 1e-3}
FUSED_NAMES = {"uncond": 0, "self": 2, "other": 3, "all": 4}  # fused_* name → row in branch order


def close(actual: torch.Tensor | np.ndarray, expected: np.ndarray, tol: dict[str, float], what: str) -> None:
    a = actual.detach().float().cpu().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    assert a.shape == expected.shape, f"{what}: shape {a.shape} != golden {expected.shape}"
    np.testing.assert_allclose(a, expected, err_msg=what, **tol)


def t(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))


def manifest(parity_dir: Path, name: str) -> dict[str, Any]:
    path = parity_dir / name
    if not path.is_file():
        pytest.fail(f"{path} is missing from the parity set")
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------------------------- layout


def test_state_dict_equals_manifest_of_the_golden_checkpoint(parity_dir: Path, motion_model: MotionGenerator) -> None:
    info = manifest(parity_dir, "manifest_motion_set.json")
    state = motion_model.state_dict()
    assert list(state) == list(info["state_dict"]), "state_dict keys or their order differ from the official model"
    for key, entry in info["state_dict"].items():
        assert list(state[key].shape) == entry["shape"], key
    params = [name for name, _ in motion_model.named_parameters()]
    assert params == info["parameters_order"]
    buffers = {name for name, _ in motion_model.named_buffers()}
    assert buffers == {k for k, e in info["state_dict"].items() if e["kind"] == "buffer"}
    assert sum(p.numel() for p in motion_model.parameters()) == info["n_parameter_elements"]


# The sinusoidal tables reach angles of up to 1023 rad, where one float32 step of the angle is 6.1e-5: torch's
# vectorised exp differs by one step between CPUs (AVX2 and AVX-512 kernels), and the sine by up to that much
# (measured 3.05e-5 on an AVX-512 machine, < 2e-5 on an AVX2 one). The checkpoint's own buffers are what the model
# loads and runs with; this checks that ours are the same function, not trained values.
ANALYTIC_ATOL = 6.2e-5


def test_checkpoint_format_and_buffers_are_analytic(parity_dir: Path, motion_config: MotionConfig) -> None:
    ckpt = read_weights(parity_dir / "motion_ckpt.ckpt")
    assert len(ckpt["ema_state"]["shadow_params"]) == sum(1 for k in ckpt["state_dict"] if not _is_buffer(k))
    fresh = random_motion_generator(motion_config, seed=0).state_dict()
    for key, value in ckpt["state_dict"].items():
        name = key.removeprefix("model.")
        if _is_buffer(name):  # our analytic buffers equal the stored ones, up to the CPU's float32 math
            torch.testing.assert_close(fresh[name], value, atol=ANALYTIC_ATOL, rtol=0, msg=name)


def _is_buffer(key: str) -> bool:
    return key.endswith((".cos_angles", ".sin_angles", ".pe.pe"))


def test_config_inferred_from_checkpoint_builds_the_same_model(
    parity_dir: Path, motion_config: MotionConfig, motion_model: MotionGenerator
) -> None:
    ckpt = read_weights(parity_dir / "motion_ckpt.ckpt")
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}
    inferred = infer_motion_config(
        state, num_heads=motion_config.num_heads, wav2vec_heads=motion_config.wav2vec2["num_attention_heads"]
    )
    for name in ("audio_dim", "face_dim", "hidden_size", "num_layers", "mlp_ratio", "max_seq_len", "head_blocks"):
        assert getattr(inferred, name) == getattr(motion_config, name), name
    assert inferred.wav2vec_layers == motion_config.wav2vec_layers
    for name in ("conv_dim", "conv_kernel", "num_conv_pos_embeddings", "num_conv_pos_embedding_groups"):
        assert inferred.wav2vec2[name] == motion_config.wav2vec2[name], name
    model = load_motion_generator(parity_dir / "motion_ckpt.ckpt", inferred)
    for key, value in model.state_dict().items():
        assert torch.equal(value, motion_model.state_dict()[key]), key


def test_full_size_model_matches_official_manifest(parity_dir: Path) -> None:
    """The default MotionConfig is the official model: 862 tensors, 778 parameters in EMA order, 393.9 M elements."""
    info = manifest(parity_dir, "manifest_motion.json")
    assert MotionConfig().wav2vec2 == info["wav2vec2_config"] == WAV2VEC2_BASE_960H
    ctor = info["constructor"]
    config = MotionConfig()
    assert (config.audio_dim, config.hidden_size, config.num_layers, config.num_heads) == (
        ctor["audio_dim"],
        ctor["hidden_size"],
        ctor["num_layers"],
        ctor["num_heads"],
    )
    assert (config.max_seq_len, config.wav2vec_layers) == (ctor["max_seq_len"], info["cfg_wav2vec_layer"])
    model = random_motion_generator(config, seed=0)
    try:
        shapes = [(k, list(v.shape)) for k, v in model.state_dict().items()]
        params = [name for name, _ in model.named_parameters()]
        n_elements = sum(p.numel() for p in model.parameters())
    finally:
        del model
        gc.collect()
    assert shapes == [(k, e["shape"]) for k, e in info["state_dict"].items()]
    assert params == info["parameters_order"]
    assert len(shapes) == info["n_state_dict_tensors"] and len(params) == info["n_parameters"]
    assert n_elements == info["n_parameter_elements"]


# ---------------------------------------------------------------------------------------------- (i) audio


def test_audio_front_end(golden, motion_model: MotionGenerator) -> None:
    inputs, ref = golden("inputs"), golden("ref_audio")
    context = motion_model.config.context
    for stream, encoder in (
        ("self", motion_model.audio_encoder_face),
        ("other", motion_model.audio_encoder_face_other),
    ):
        padded = np.concatenate([np.zeros(context * SAMPLES_PER_FRAME, np.float32), inputs[f"audio_{stream}"]])
        np.testing.assert_array_equal(padded, ref[f"audio_{stream}_padded"])
        values = input_values(padded)
        close(values, ref[f"input_values_{stream}"], {"atol": 1e-6, "rtol": 1e-6}, f"input_values_{stream}")
        with torch.inference_mode():
            feat50 = encoder(t(values)[None])
            feat25 = to_25fps(feat50)
        assert feat50.shape[1] == wav2vec_frames(len(values))
        close(feat50[0], ref[f"wav2vec_{stream}"], TIGHT, f"wav2vec_{stream}")
        close(feat25[0], ref[f"feat25_{stream}"], TIGHT, f"feat25_{stream}")
        assert feat25.shape[1] == len(padded) // SAMPLES_PER_FRAME
    with torch.inference_mode():
        fused = motion_model.fuse(t(ref["feat25_self"]), t(ref["feat25_other"]))
    for name, row in FUSED_NAMES.items():
        close(fused[row, 1:], ref[f"fused_{name}"], TIGHT, f"fused_{name}")
    close(fused[1], fused[0].numpy(), {"atol": 0, "rtol": 0}, "the anchor branch has no audio")


# ---------------------------------------------------------------------------------------------- (ii) one window


@pytest.mark.parametrize("case", ["", "rand_"], ids=["real_run_frame", "random_frame"])
def test_window_transformer_and_sampler(golden, motion_model: MotionGenerator, case: str) -> None:
    ref = golden("ref_window")
    context = motion_model.config.context
    schedule = flow_match_schedule(int(ref[f"{case}timesteps"].shape[0]))
    np.testing.assert_array_equal(schedule.timesteps.numpy(), ref[f"{case}timesteps"])
    np.testing.assert_array_equal(schedule.sigmas.numpy(), ref[f"{case}sigmas"])
    gates = branch_gates(BRANCHES_5)
    with torch.inference_mode():
        fused = motion_model.fuse(t(ref[f"{case}feat_self_window"])[1:], t(ref[f"{case}feat_other_window"])[1:])
        for name, row in FUSED_NAMES.items():
            close(fused[row], ref[f"{case}fused_{name}"], TIGHT, f"{case}fused_{name}")
        past, anchor = t(ref[f"{case}past_motion"]), t(ref[f"{case}anchor"])
        hidden = motion_model.last_hidden(past, fused[:, :context], anchor, gates.anchor)
        cn = motion_model.condition(past, fused[:, :context], anchor, gates.anchor)
        close(hidden, ref[f"{case}gpt_last_hidden"], TIGHT, "gpt_last_hidden")
        close(cn, ref[f"{case}cn"], TIGHT, "cn")
        close(motion_model.time_embed(schedule.timesteps), ref[f"{case}temb"], TIGHT, "temb")

        # the head per step, from the golden inputs of each step
        temb = t(ref[f"{case}temb"])
        for s in range(schedule.steps):
            x0 = motion_model.diffusion_head(t(ref[f"{case}z_in"][s])[None], t(ref[f"{case}cn"]), temb[s : s + 1])
            close(x0, ref[f"{case}x0_branches"][s], TIGHT, f"x0_branches[{s}]")
            # guidance + Euler step reproduce the official step bit for bit from the golden x0
            guided = CfgScales().combine(t(ref[f"{case}x0_branches"][s]))
            z = euler_step(t(ref[f"{case}z_in"][s]), guided, schedule.sigmas[s], schedule.sigmas[s + 1])
            np.testing.assert_array_equal(z.numpy(), ref[f"{case}z_out"][s], err_msg=f"z_out[{s}]")

        # the whole frame from our own c_n, with all five branches and with the anchor branch skipped
        for cfg, rows in ((CfgScales(), [0, 2, 3, 4]), (None, [0, 1, 2, 3, 4])):
            trace = SampleTrace()
            c_rows = cn[rows]
            scales = cfg or CfgScales()
            latent = sample_latent(motion_model, c_rows, t(ref[f"{case}noise"]), schedule.steps, scales, trace)
            close(torch.stack(trace.z_in), ref[f"{case}z_in"], TIGHT, "z_in")
            close(torch.stack(trace.z_out), ref[f"{case}z_out"], TIGHT, "z_out")
            close(latent, ref[f"{case}latent"], TIGHT, "latent")


# ---------------------------------------------------------------------------------------------- (iii) flow head


def test_flow_head(golden, motion_model: MotionGenerator) -> None:
    ref = golden("ref_flow_head")
    with torch.inference_mode():
        temb = motion_model.time_embed(t(ref["timesteps"]))
        close(temb, ref["temb"], TIGHT, "temb")
        for s in range(len(ref["timesteps"])):
            x0 = motion_model.diffusion_head(t(ref["z_t"]), t(ref["c"]), temb[s : s + 1])
            close(x0, ref["x0_branches"][s], TIGHT, f"x0_branches[{s}]")


# ---------------------------------------------------------------------------------------------- (iv) generation


def test_offline_generation(golden, parity_config: dict[str, Any], motion_model: MotionGenerator) -> None:
    inputs, ref = golden("inputs"), golden("ref_generation")
    frames = num_output_frames(len(inputs["audio_self"]))
    assert frames == ref["motion_latents"].shape[0] == parity_config["audio"]["generated_frames_T"]
    np.testing.assert_array_equal(inputs["noise"], ref["noise"])
    scales = parity_config["motion"]["cfg_scales"]
    cfg = CfgScales(scales["cfg_audio"], scales["cfg_audio_other"], scales["cfg_anchor"], scales["cfg_all"])
    steps = int(parity_config["motion"]["denoising_steps"])
    np.testing.assert_array_equal(flow_match_schedule(steps).timesteps.numpy(), ref["timesteps"])
    trace = GenerationTrace()
    latents = generate(
        motion_model,
        inputs["audio_self"],
        inputs["audio_other"],
        t(inputs["anchor_m0"]),
        steps=steps,
        cfg=cfg,
        noise=inputs["noise"],
        trace=trace,
    )
    close(latents, ref["motion_latents"], AUTOREGRESSIVE, "motion_latents")
    rows = [i for i, b in enumerate(BRANCHES_5) if b in cfg.branches]
    close(torch.stack(trace.cn), ref["cn"][:, rows], AUTOREGRESSIVE, "cn")
    close(torch.stack(trace.last_hidden), ref["gpt_last_hidden"][:, rows], AUTOREGRESSIVE, "gpt_last_hidden")
    close(torch.stack(trace.z_out), ref["z_out"], AUTOREGRESSIVE, "z_out")

    # the noise may also come from a function of the frame index: the same run
    table = t(inputs["noise"])
    replay = generate(
        motion_model, inputs["audio_self"], inputs["audio_other"], t(inputs["anchor_m0"]), noise=lambda j: table[j]
    )
    assert torch.equal(replay, latents)
