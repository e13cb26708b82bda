"""The agent's speech services (STT, LLM, TTS) from its settings, each named ``provider/model``.

- ``services="inference"``: the names go to LiveKit Inference as they are (``deepgram/nova-3``), through LiveKit
  Cloud.
- ``services="plugins"``: each is built by livekit's plugin for its provider (``livekit.plugins.<provider>``, the
  package ``livekit-plugins-<provider>``) with ``model=`` the rest of the name, and the provider's own API key
  variable (``DEEPGRAM_API_KEY``, ``OPENAI_API_KEY``, ...), as that plugin reads it. The ``openai`` provider also
  reaches any OpenAI-compatible server (``openai_base_url``: a local one, e.g. vLLM, Ollama or speaches), so
  ``openai/whisper-1``, ``openai/qwen2.5`` and ``openai/tts-1`` need no cloud at all.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from agent.errors import UserError
from config.settings import AgentSettings

KINDS = {"stt": "STT", "llm": "LLM", "tts": "TTS"}  # setting -> the plugin's class


def configured(settings: AgentSettings) -> dict[str, str]:
    """The services that are set, by kind."""
    return {kind: spec for kind in KINDS if (spec := getattr(settings, kind))}


def _provider_and_model(kind: str, spec: str) -> tuple[str, str]:
    provider, _, model = spec.partition("/")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", provider) or not model:
        variable = f"DYSTREAM_AGENT__{kind.upper()}"
        raise UserError(f"{variable}={spec} is not provider/model: write it as e.g. openai/gpt-4.1-mini")
    return provider, model


def plugin_class(kind: str, spec: str) -> type:
    """The livekit plugin class that builds ``spec`` (``provider/model``); importing the plugin registers it, so do
    this on the main thread, before the job processes start (``check``)."""
    provider, _ = _provider_and_model(kind, spec)
    variable = f"DYSTREAM_AGENT__{kind.upper()}={spec}"
    try:
        module = importlib.import_module(f"livekit.plugins.{provider}")
    except ModuleNotFoundError as exc:
        if exc.name is not None and not f"livekit.plugins.{provider}".startswith(exc.name):
            raise
        package = f"livekit-plugins-{provider.replace('_', '-')}"
        raise UserError(f"{variable} needs livekit's {provider} plugin: pip install {package}") from None
    cls = getattr(module, KINDS[kind], None)
    if not isinstance(cls, type):
        raise UserError(f"{variable}: livekit's {provider} plugin has no {KINDS[kind]}; choose another provider")
    return cls


def check(settings: AgentSettings) -> None:
    """Refuse a service name no plugin can build (``services="plugins"``), naming the setting and the fix."""
    if settings.services == "plugins":
        for kind, spec in configured(settings).items():
            plugin_class(kind, spec)


def build(settings: AgentSettings) -> dict[str, Any]:
    """``stt``, ``llm`` and ``tts`` for ``AgentSession``: the Inference names, or the plugins' instances."""
    services = configured(settings)
    if settings.services == "inference":
        return services
    built: dict[str, Any] = {}
    for kind, spec in services.items():
        provider, model = _provider_and_model(kind, spec)
        options: dict[str, Any] = {"model": model}
        if provider == "openai":
            if settings.openai_base_url:
                options["base_url"] = settings.openai_base_url
            if settings.openai_api_key is not None:
                options["api_key"] = settings.openai_api_key.get_secret_value()
        built[kind] = plugin_class(kind, spec)(**options)
    return built
