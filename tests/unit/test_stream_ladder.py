"""The quality ladder: the governor on a fake clock (down on overload, to the rung that helps, up with hysteresis and
back-off, floor, pinned rung), and the cheap rungs' arithmetic in StreamCore (skipped frames, no guidance)."""

from __future__ import annotations

import typing

import numpy as np
import pytest
import torch

from avatar.errors import InputError
from avatar.motion.checkpoints import random_motion_generator
from avatar.motion.config import MotionConfig
from avatar.sampling.cfg import ALL_BRANCH
from avatar.stream.core import StreamCore
from avatar.stream.ladder import QualityGovernor, StageCosts, ladder, rung_index, rung_names
from config.settings import RungName, StreamSettings

RUNGS = ladder(5)


class FakeTime:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def run(governor: QualityGovernor, now: FakeTime, seconds: float, motion: float, render: float) -> None:
    """``seconds`` of 40 ms ticks whose work takes ``motion`` / ``render`` of a tick: above 1, the thread is busy
    all the time and misses the part of its work it has no time for."""
    for _ in range(round(seconds / 0.04)):
        now.t += 0.04
        for thread, demand in (("motion", motion), ("render", render)):
            governor.report(thread, 0.04 * min(demand, 1.0), due=1, missed=max(0.0, 1 - 1 / demand))
        governor.update()


def test_the_settings_name_every_rung_of_the_ladder() -> None:
    assert typing.get_args(RungName) == rung_names() == tuple(r.name for r in RUNGS)
    assert RUNGS[0].steps == 5 and RUNGS[0].guidance and RUNGS[0].render_every == 1
    assert rung_index("half-render") == 3
    with pytest.raises(InputError, match="half-render"):
        rung_index("quarter")


def test_an_overloaded_renderer_steps_down_to_rendering_fewer_frames() -> None:
    now = FakeTime()
    governor = QualityGovernor(RUNGS, now=now)
    run(governor, now, 0.6, motion=0.3, render=1.5)
    # fewer sampler steps would not help the renderer: straight to the first rung that renders less
    assert governor.rung.name == "half-render" and governor.changes == 1


def test_an_overloaded_motion_thread_steps_down_one_rung_at_a_time_to_the_floor() -> None:
    now = FakeTime()
    governor = QualityGovernor(RUNGS, floor=rung_index("no-guidance"), now=now)
    run(governor, now, 0.6, motion=1.5, render=0.2)
    assert governor.rung.name == "steps-3"
    run(governor, now, 5.0, motion=1.5, render=0.2)
    assert governor.rung.name == "no-guidance" and governor.changes == 2  # never below the floor


def test_a_motion_thread_far_behind_goes_straight_to_generating_fewer_latents() -> None:
    now = FakeTime()
    governor = QualityGovernor(RUNGS, now=now)
    run(governor, now, 0.6, motion=3.0, render=0.2)  # two thirds of its work missed
    assert governor.rung.name == "half-motion" and governor.changes == 1
    floored = QualityGovernor(RUNGS, floor=rung_index("no-guidance"), now=now)
    run(floored, now, 0.6, motion=3.0, render=0.2)
    assert floored.rung.name == "no-guidance" and floored.changes == 1  # no such rung above the floor: the floor


def test_steps_up_after_a_calm_hold_and_backs_off_when_that_fails() -> None:
    now = FakeTime()
    governor = QualityGovernor(RUNGS, now=now)
    run(governor, now, 0.6, motion=1.5, render=0.2)
    assert governor.rung.name == "steps-3"
    run(governor, now, 2.0, motion=0.3, render=0.2)
    assert governor.rung.name == "steps-3"  # calm, but not for long enough yet
    run(governor, now, 2.6, motion=0.3, render=0.2)
    assert governor.rung.name == "full"
    run(governor, now, 0.6, motion=1.5, render=0.2)  # full quality does not hold: down again, at once
    assert governor.rung.name == "steps-3" and governor.up_hold_s == 6.0
    run(governor, now, 4.0, motion=0.3, render=0.2)
    assert governor.rung.name == "steps-3"  # the next try waits twice as long
    run(governor, now, 3.5, motion=0.3, render=0.2)
    assert governor.rung.name == "full" and governor.changes == 4


def test_a_busy_thread_that_keeps_up_keeps_the_rung() -> None:
    now = FakeTime()
    governor = QualityGovernor(RUNGS, now=now)
    run(governor, now, 0.6, motion=1.5, render=0.2)
    run(governor, now, 20.0, motion=0.7, render=0.95)  # in the band, and a renderer busy but on time
    assert governor.rung.name == "steps-3" and governor.changes == 1


def test_a_pinned_rung_or_adaptation_off_never_moves() -> None:
    now = FakeTime()
    pinned = QualityGovernor(RUNGS, pinned=rung_index("half-motion"), now=now)
    fixed = QualityGovernor(RUNGS, adaptive=False, now=now)
    for governor in (pinned, fixed):
        run(governor, now, 3.0, motion=1.5, render=1.5)
    assert pinned.rung.name == "half-motion" and fixed.rung.name == "full"
    assert pinned.changes == fixed.changes == 0
    assert fixed.last_load == pytest.approx({"motion": 1.0, "render": 1.0})  # still measured, for the metrics
    with pytest.raises(InputError):
        QualityGovernor(RUNGS, floor=len(RUNGS))
    assert StreamSettings(pinned_rung="third").pinned_rung == "third"
    with pytest.raises(ValueError, match="pinned_rung"):
        StreamSettings(pinned_rung="quarter")


def _costs(sampler_5: float, render: float) -> StageCosts:
    """Stage costs (ms) where fewer steps and no guidance cost less, as they do."""
    sampler = {
        (5, True): sampler_5,
        (3, True): 0.6 * sampler_5,
        (3, False): 0.2 * sampler_5,
        (2, False): 0.15 * sampler_5,
    }
    return StageCosts(audio_ms=2.0, sampler_ms=sampler, render_ms=render)


def test_a_call_starts_at_the_best_rung_its_measured_costs_allow() -> None:
    def start(costs: StageCosts, **options: object) -> QualityGovernor:
        governor = QualityGovernor(RUNGS, now=FakeTime(), **options)
        governor.start_at(costs, 40.0)
        return governor

    fast = start(_costs(sampler_5=10.0, render=15.0))
    assert fast.rung.name == "full" and fast.changes == 0  # both threads need under half the period
    # a slow renderer (50 ms a picture) starts where one picture in three leaves it under half the period
    assert start(_costs(sampler_5=10.0, render=50.0)).rung.name == "third"
    # a slow motion step (30 ms at 5 guided steps) starts at 3 steps, where it needs 20 ms of the 40
    slow_motion = start(_costs(sampler_5=30.0, render=15.0))
    assert slow_motion.rung.name == "steps-3" and slow_motion.changes == 1  # a change, logged and counted
    # nothing fits: the floor; pinned or not adaptive: the configured rung
    assert start(_costs(10.0, 200.0), floor=rung_index("half-render")).rung.name == "half-render"
    assert start(_costs(10.0, 200.0), pinned=rung_index("steps-3")).rung.name == "steps-3"
    assert start(_costs(10.0, 200.0), adaptive=False).rung.name == "full"


@pytest.fixture(scope="module")
def motion():
    return random_motion_generator(MotionConfig.tiny(), seed=0)


def _core(motion) -> StreamCore:
    m0 = torch.randn(1, motion.config.face_dim, generator=torch.Generator().manual_seed(1)) * 0.1
    return StreamCore(motion, None, m0, None, seed=3, left_context_ms=400)


def _audio(j: int) -> np.ndarray:
    return np.random.default_rng(j).normal(0, 0.1, 640 + 960).astype(np.float32)


def test_skipped_frames_get_latents_interpolated_between_their_generated_neighbours(motion) -> None:
    core = _core(motion)
    rung = RUNGS[rung_index("half-motion")]
    generated = {}
    for j in range(6):
        a = _audio(j)
        core.hear(a[:640], a[:640], a[640:], a[640:])
        if j % 3 == 2:
            generated[j] = core.generate(rung)
        else:
            core.skip()
    assert core.index == 6
    history = core.history
    # frames 3 and 4 lie on the line from latent 2 to latent 5, at 1/3 and 2/3
    np.testing.assert_allclose(history[-3], generated[2] + (generated[5] - generated[2]) / 3, atol=1e-6)
    np.testing.assert_allclose(history[-2], generated[2] + 2 * (generated[5] - generated[2]) / 3, atol=1e-6)
    np.testing.assert_array_equal(history[-1], generated[5])


def test_a_frame_heard_without_encoding_gets_its_own_token_from_the_next_encoded_window(motion) -> None:
    every, deferred = _core(motion), _core(motion)
    for j in range(4):
        a = _audio(j)
        every.hear(a[:640], a[:640], a[640:], a[640:])
        deferred.hear(a[:640], a[:640], a[640:], a[640:], encode=j != 2)
        if j == 2:  # a stand-in until frame 3 is encoded: frame 1's token again
            torch.testing.assert_close(deferred.fused[:, -1], deferred.fused[:, -2], rtol=0, atol=0)
    assert deferred.features["self"].encodes == every.features["self"].encodes - 1  # frames 2 and 3: one run
    torch.testing.assert_close(deferred.fused[:, -1], every.fused[:, -1])  # frame 3: the same window
    branch = every.branches.index(ALL_BRANCH)  # the branch that hears both streams
    own, stand_in, alone = deferred.fused[branch, -2], deferred.fused[branch, -3], every.fused[branch, -2]
    # frame 2's own token (from frame 3's window: 40 ms more lookahead), much nearer its token encoded alone than
    # the stand-in is
    assert (own - alone).norm() < 0.5 * (stand_in - alone).norm()


def _recording(noise, drawn: list[int]):
    """``noise`` that records the frames it is asked for."""

    def draw(j: int) -> torch.Tensor:
        drawn.append(j)
        return noise(j)

    return draw


def test_a_skipped_frame_keeps_the_noise_draws_of_the_frames_after_it(motion) -> None:
    """Frame 2's start latent is the same whether frame 1 was generated or skipped: the rungs differ only by what
    they compute, not by the randomness (their deviation from full quality is measured, README)."""
    draws = []
    for skip in (False, True):
        core = _core(motion)
        noises: list[int] = []
        core.noise = _recording(core.noise, noises)
        for j in range(3):
            a = _audio(j)
            core.hear(a[:640], a[:640], a[640:], a[640:])
            core.skip() if skip and j == 1 else core.generate(RUNGS[0])
        draws.append(noises)
    assert draws[0] == draws[1] == [0, 1, 2]


def test_no_guidance_runs_the_all_branch_alone(motion) -> None:
    guided, unguided = _core(motion), _core(motion)
    for core in (guided, unguided):
        a = _audio(0)
        core.hear(a[:640], a[:640], a[640:], a[640:])
    full = guided.generate(RUNGS[rung_index("steps-3")])
    cheap = unguided.generate(RUNGS[rung_index("no-guidance")])
    # same steps and noise, the x0 of the `all` branch instead of the guided combination: close, not equal
    assert not torch.equal(full, cheap)
    assert torch.nn.functional.cosine_similarity(full, cheap, dim=0) > 0.5


def test_capacity_is_what_the_device_holds_at_the_floor_rung() -> None:
    from avatar.stream.capacity import TickCost, capacity

    cost = TickCost(motion_ms=6.0, render_ms=4.0)  # 10 ms of work a tick
    assert capacity(cost, torch.device("cpu"), cores=2) == 6  # 0.8 x 40 ms x 2 cores / 10 ms
    assert capacity(cost, torch.device("cuda")) == 3  # one device shared in time
    assert capacity(TickCost(500.0, 2000.0), torch.device("cpu"), cores=2) == 1  # never less than one


def test_a_tiny_model_is_measured_cheaper_at_the_floor_than_at_full_quality() -> None:
    from avatar.renderer import RendererConfig, random_renderer
    from avatar.stream.capacity import measure_tick_cost

    motion = random_motion_generator(MotionConfig.tiny(), seed=0)
    renderer = random_renderer(RendererConfig.tiny(), seed=0)
    with torch.inference_mode():
        m0, f_app = renderer.encode_portrait(torch.zeros(1, 3, 128, 128))
    costs = {}
    for name in ("full", "third"):
        core = StreamCore(motion, renderer, m0, f_app, seed=0, left_context_ms=400)
        costs[name] = measure_tick_cost(core, RUNGS[rung_index(name)], ticks=12)
    # the floor renders a third of the ticks and samples a quarter of the batch in fewer steps: far cheaper
    assert costs["third"].render_ms < 0.6 * costs["full"].render_ms
    assert costs["third"].motion_ms < costs["full"].motion_ms
