"""The plugin is a library of its own: it and the model import and configure without this repository's application
(``config``, ``agent``), its options not given come from the ``DYSTREAM_*`` variables, a bad one is its own
``SettingsError`` naming the variable, and importing it loads neither the model nor torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from livekit.plugins import dystream

from config.settings import Settings

# a process where `config` and `agent` cannot be imported: what a user of the plugin alone has
WITHOUT_THE_APP = """
import importlib.abc, json, sys

class NoApp(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("config", "agent"):
            raise ImportError(f"{name} is this repository's application, not the plugin")
        return None

sys.meta_path.insert(0, NoApp())
from livekit.plugins import dystream
facts = {"torch_loaded": "torch" in sys.modules}
import avatar.weights.download, avatar.offline, avatar.render_video, avatar.stream.engine
try:
    avatar = dystream.AvatarSession(size="tiny", vad="webrtc")
    s = avatar.settings
    facts.update(steps=s.model.steps, size=s.avatar.size, vad=s.vad.backend, url=s.livekit.url,
                 lookahead=s.stream.lookahead_other_ms, kind=type(s).__name__)
except dystream.DyStreamException as exc:
    facts.update(error=str(exc), error_is=type(exc).__name__)
print(json.dumps(facts))
"""


def run_without_the_app(tmp_path: Path, **variables: str) -> dict:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("DYSTREAM_", "LIVEKIT_"))}
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_THE_APP],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        cwd=tmp_path,  # no .env here
        env=env | {"PYTHONPATH": str(Path(__file__).parents[2])} | variables,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_plugin_runs_without_the_app_and_reads_its_options_from_the_environment(tmp_path: Path) -> None:
    facts = run_without_the_app(
        tmp_path,
        DYSTREAM_MODEL__STEPS="3",
        DYSTREAM_STREAM__LOOKAHEAD_OTHER_MS="120",
        LIVEKIT_URL="ws://livekit.example:7880",
        DYSTREAM_AGENT__STT="deepgram/nova-3",  # the application's section: not the plugin's business
    )
    assert facts == {
        "torch_loaded": False,
        "steps": 3,
        "size": "tiny",  # an argument wins over the environment's default
        "vad": "webrtc",
        "url": "ws://livekit.example:7880",
        "lookahead": 120,
        "kind": "DyStreamSettings",
    }


def test_a_bad_variable_is_the_plugins_settings_error_naming_it(tmp_path: Path) -> None:
    facts = run_without_the_app(tmp_path, DYSTREAM_STREAM__LOOKAHEAD_SELF_MS="900")
    assert facts["error_is"] == "SettingsError"
    assert facts["error"].startswith("DYSTREAM_STREAM__LOOKAHEAD_SELF_MS=900 is invalid: should be less than")


def test_the_apps_settings_are_the_plugins_with_the_apps_own_added() -> None:
    app = Settings(model={"steps": 2}, agent={"stt": "deepgram/nova-3"})
    assert isinstance(app, dystream.DyStreamSettings)
    avatar = dystream.AvatarSession(settings=app, size="tiny")
    assert (avatar.settings.model.steps, avatar.settings.avatar.size) == (2, "tiny")
    assert set(dystream.DyStreamSettings.model_fields) == {"model", "stream", "vad", "livekit", "avatar"}
