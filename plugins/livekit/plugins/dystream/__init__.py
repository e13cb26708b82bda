"""DyStream avatar plugin for livekit-agents: a talking *and listening* avatar from one portrait.

    from livekit.plugins import dystream

    avatar = dystream.AvatarSession(portrait="me.png")
    await avatar.start(session, room=ctx.room)       # before session.start(...)

``download_files()`` of the registered plugin fetches the weights, so ``python -m livekit.agents download-files``
(or ``python agent.py download-files``) prepares a machine like it does for any other plugin.
"""

from livekit.agents import Plugin

from .avatar import AvatarSession
from .errors import DyStreamException
from .generator import DyStreamVideoGenerator
from .listener import UserListener
from .log import logger
from .metrics import DyStreamMetrics, FrameMetrics, SessionMetrics
from .models import load_models
from .remote import accept_avatar_job, avatar_worker_load, dispatch_avatar, run_avatar_job
from .settings import DyStreamSettings, SettingsError
from .state import AvatarState, ConversationState, StateChangedEvent
from .state_attribute import ATTRIBUTE_STATE
from .version import __version__

__all__ = [
    "ATTRIBUTE_STATE",
    "AvatarSession",
    "AvatarState",
    "ConversationState",
    "DyStreamException",
    "DyStreamMetrics",
    "DyStreamSettings",
    "DyStreamVideoGenerator",
    "FrameMetrics",
    "SessionMetrics",
    "SettingsError",
    "StateChangedEvent",
    "UserListener",
    "__version__",
    "accept_avatar_job",
    "avatar_worker_load",
    "dispatch_avatar",
    "load_models",
    "run_avatar_job",
]


class DyStreamPlugin(Plugin):
    def __init__(self) -> None:
        super().__init__(__name__, __version__, __package__, logger)

    def download_files(self) -> None:
        from avatar.weights.download import download_files

        from .settings import read_settings

        download_files(read_settings().model)


Plugin.register_plugin(DyStreamPlugin())
