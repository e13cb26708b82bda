"""`dystream render --image P --self A [--other B] [--mix M] --out out.mp4`: one portrait and its voice → one MP4.

Argument parsing only; the work is ``avatar.render_video.render_video``.
"""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

from agent.errors import UserError
from config.settings import ModelSettings, get_settings


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "render",
        help="render a portrait talking (and listening) to audio into an MP4",
        description="Render IMAGE speaking the SELF audio (and listening to the OTHER audio) into a 25 fps H.264/AAC "
        "MP4. Audio may be any format and sample rate ffmpeg reads. Frames: floor(N/640) - 1 for N samples at 16 kHz. "
        "Needs the weights from `dystream download-files`, or --random-weights for an untrained model.",
    )
    parser.add_argument("--image", required=True, type=Path, help="portrait photo with one face (any size)")
    parser.add_argument("--self", dest="audio_self", required=True, type=Path, help="the avatar's own voice")
    parser.add_argument("--other", dest="audio_other", type=Path, help="the other person's voice (default: silence)")
    parser.add_argument("--mix", type=Path, help="soundtrack of the video (default: self + other summed)")
    parser.add_argument("--out", required=True, type=Path, help="output .mp4 (written whole or not at all)")
    parser.add_argument("--steps", type=int, help="sampler steps, 1..20 (default: DYSTREAM_MODEL__STEPS, 5)")
    parser.add_argument("--seed", type=int, help="noise seed for a repeatable video (default: random)")
    parser.add_argument("--device", help="torch device: cpu, cuda, cuda:1 (default: DYSTREAM_MODEL__DEVICE)")
    parser.add_argument(
        "--checkpoints", type=Path, help="folder of the downloaded weights (default: DYSTREAM_MODEL__CHECKPOINTS_DIR)"
    )
    parser.add_argument(
        "--random-weights", action="store_true", default=None, help="untrained model: tests the path without weights"
    )
    parser.add_argument("--size", choices=["full", "tiny"], help="model size; tiny needs --random-weights")
    parser.add_argument("--no-crop", action="store_true", help="IMAGE is already a square face crop: skip detection")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)


def model_settings_from(args: argparse.Namespace) -> ModelSettings:
    """The process's model settings with the command-line overrides applied (and validated)."""
    updates: dict[str, object] = {}
    if args.device:
        updates["device"] = args.device
    if args.checkpoints:
        updates["checkpoints_dir"] = args.checkpoints
    if args.steps is not None:
        updates["steps"] = args.steps
    if args.seed is not None:
        updates["seed"] = args.seed
    from pydantic import ValidationError

    base = get_settings().model
    try:
        return ModelSettings.model_validate({**base.model_dump(), **updates})
    except ValidationError as exc:
        problems = "; ".join(f"--{'-'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise UserError(f"invalid option ({problems})") from None


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def run(args: argparse.Namespace) -> int:
    from avatar.models import load_avatar_models
    from avatar.render_video import check_inputs, render_video
    from avatar.renderer import RendererConfig

    # SIGTERM ends a render like Ctrl-C: the exception unwinds through the writer, which removes its temporary file
    signal.signal(signal.SIGTERM, _terminate)
    settings = model_settings_from(args)
    avatar = get_settings().avatar
    random_weights = avatar.random_weights if args.random_weights is None else args.random_weights
    size = args.size or avatar.size
    image_size = (RendererConfig.tiny() if size == "tiny" else RendererConfig()).image_size
    inputs = {"audio_other": args.audio_other, "audio_mix": args.mix, "crop": not args.no_crop}
    check_inputs(args.image, args.audio_self, args.out, settings, size=image_size, **inputs)
    models = load_avatar_models(settings, random_weights=random_weights, size=size)
    result = render_video(
        args.image,
        args.audio_self,
        args.out,
        models,
        settings,
        **inputs,
        progress=not args.quiet,
    )
    print(
        f"wrote {result.out}: {result.frames} frames {result.size}x{result.size} at {result.fps} fps "
        f"({result.duration_s:.2f} s, audio: {result.audio}) in {result.seconds:.1f} s"
    )
    return 0
