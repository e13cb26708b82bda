"""The remote avatar worker as a module-level ``AgentServer``, for livekit-agents' own entry point:

    python -m livekit.agents start agent/avatar_app.py

It is the worker ``dystream avatar-worker`` runs (``agent.avatar_worker.build_avatar_server``), configured the same
way; ``agent/app.py`` says what ``dystream`` adds.
"""

import os

from agent.errors import exit_on_user_error

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads (agent/__main__.py says why)

with exit_on_user_error("avatar-worker"):
    from agent.avatar_worker import build_avatar_server
    from config.settings import get_settings

    server = build_avatar_server(get_settings())
