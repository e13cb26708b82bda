"""The plugin logs as livekit plugins do: the standard library's logger, fields in ``extra``, handlers left to the
application; the application's renderer shows those fields."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from config.log import configure_logging

IMPORTS = """
import json, logging
root = logging.getLogger()
before = (list(root.handlers), root.level)
import livekit.plugins.dystream
import avatar.stream.engine, avatar.models, avatar.media.portrait, avatar.render_video
print(json.dumps({"same": (list(root.handlers), root.level) == before,
                  "plugin_handlers": len(logging.getLogger("livekit.plugins.dystream").handlers)}))
"""


def test_importing_the_plugin_and_the_model_leaves_the_root_logger_alone() -> None:
    done = subprocess.run([sys.executable, "-c", IMPORTS], capture_output=True, text=True, timeout=300, check=True)
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    assert facts == {"same": True, "plugin_handlers": 0}


def test_the_application_renders_the_plugins_fields(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("json", "INFO")
        logging.getLogger("livekit.plugins.dystream").info("avatar quality rung changed", extra={"rung": "third"})
        line = capsys.readouterr().err.strip().splitlines()[-1]
    finally:
        root.handlers, _ = saved
        root.setLevel(saved[1])
    record = json.loads(line)
    assert (record["event"], record["rung"], record["level"]) == ("avatar quality rung changed", "third", "info")
