"""The agent's speech services through livekit's provider plugins: an OpenAI-compatible server on loopback (a
stand-in for a local vLLM / Ollama / speaches) serves the agent's STT, LLM and TTS with no cloud; a provider whose
plugin is not installed is one line naming the package."""

from __future__ import annotations

import io
import json
import wave

import numpy as np
import pytest
from aiohttp import web
from livekit import rtc
from livekit.agents import AgentSession, llm

from agent import pipeline, speech_services
from agent.errors import UserError
from config.settings import AgentSettings

REPLY = ["Hello ", "from the ", "local server."]
HEARD = "what is the weather"
TTS_RATE = 24000  # what OpenAI's speech endpoint sends


def wav_tone(seconds: float) -> bytes:
    t = np.arange(int(seconds * TTS_RATE)) / TTS_RATE
    pcm = (0.3 * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    out = io.BytesIO()
    with wave.open(out, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(TTS_RATE)
        f.writeframes(pcm.tobytes())
    return out.getvalue()


@pytest.fixture
async def openai_server():
    """An OpenAI-compatible server on 127.0.0.1: chat completions (streamed), transcriptions and speech. Records
    each request's path, model and key."""
    requests: list[tuple[str, str, str]] = []

    def record(request: web.Request, model: str) -> None:
        requests.append((request.path, model, request.headers.get("Authorization", "")))

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        record(request, body["model"])
        reply = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await reply.prepare(request)
        for i, text in enumerate(REPLY):
            delta = {"role": "assistant", "content": text} if i == 0 else {"content": text}
            chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": body["model"]}
            chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": None}]
            await reply.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await reply.write(b"data: [DONE]\n\n")
        return reply

    async def transcriptions(request: web.Request) -> web.Response:
        form = await request.post()
        record(request, str(form["model"]))
        assert form["file"].file.read(4) == b"RIFF"  # the user's audio, as WAV
        return web.json_response({"text": HEARD})

    async def speech(request: web.Request) -> web.Response:
        body = await request.json()
        record(request, body["model"])
        return web.Response(body=wav_tone(0.5), content_type="audio/wav")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/audio/transcriptions", transcriptions)
    app.router.add_post("/v1/audio/speech", speech)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/v1", requests
    await runner.cleanup()


async def test_an_openai_compatible_server_serves_the_agents_stt_llm_and_tts(openai_server) -> None:
    url, requests = openai_server
    settings = AgentSettings(
        stt="openai/whisper-1",
        llm="openai/qwen2.5-7b-instruct",
        tts="openai/tts-1",
        services="plugins",
        openai_base_url=url,
        openai_api_key="local-key",
    )
    pipeline.check_settings(settings)
    session = pipeline.build_session(settings, vad=None)
    assert isinstance(session, AgentSession)
    services = speech_services.build(settings)

    chat = llm.ChatContext()
    chat.add_message(role="user", content=HEARD)
    said = []
    async with services["llm"].chat(chat_ctx=chat) as stream:
        async for chunk in stream:
            if chunk.delta and chunk.delta.content:
                said.append(chunk.delta.content)
    assert "".join(said) == "".join(REPLY)

    frames = [event.frame async for event in services["tts"].synthesize("".join(REPLY))]
    assert sum(f.samples_per_channel for f in frames) / frames[0].sample_rate == pytest.approx(0.5, abs=0.03)
    assert max(np.abs(np.frombuffer(f.data, np.int16)).max() for f in frames) > 5000  # the tone, not silence

    voice = rtc.AudioFrame(np.zeros(16000, np.int16).tobytes(), 16000, 1, 16000)
    heard = await services["stt"].recognize(buffer=[voice])
    assert heard.alternatives[0].text == HEARD

    assert [(path, model) for path, model, _ in requests] == [
        ("/v1/chat/completions", "qwen2.5-7b-instruct"),
        ("/v1/audio/speech", "tts-1"),
        ("/v1/audio/transcriptions", "whisper-1"),
    ]
    assert {key for _, _, key in requests} == {"Bearer local-key"}
    await session.aclose()


def test_inference_names_go_to_livekit_inference_as_they_are() -> None:
    settings = AgentSettings(stt="deepgram/nova-3", llm="openai/gpt-4.1-mini", tts="cartesia/sonic-2")
    assert speech_services.build(settings) == {
        "stt": "deepgram/nova-3",
        "llm": "openai/gpt-4.1-mini",
        "tts": "cartesia/sonic-2",
    }


def test_a_provider_without_its_plugin_is_one_line_naming_the_package() -> None:
    settings = AgentSettings(stt="deepgram/nova-3", llm="openai/gpt-4.1-mini", tts="openai/tts-1", services="plugins")
    with pytest.raises(UserError, match=r"^DYSTREAM_AGENT__STT=deepgram/nova-3 needs livekit's deepgram plugin: "):
        pipeline.check_settings(settings)
    with pytest.raises(UserError, match="pip install livekit-plugins-deepgram$"):
        pipeline.check_settings(settings)


def test_a_name_without_a_provider_is_refused() -> None:
    settings = AgentSettings(stt="whisper", llm="openai/gpt-4.1-mini", tts="openai/tts-1", services="plugins")
    with pytest.raises(UserError, match=r"DYSTREAM_AGENT__STT=whisper is not provider/model"):
        pipeline.check_settings(settings)
