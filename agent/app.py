"""The agent worker as a module-level ``AgentServer``, for livekit-agents' own entry point (and the ``lk`` CLI that
drives it):

    python -m livekit.agents start agent/app.py [--dev]

It is the worker ``dystream start`` runs (``agent.worker.build_server``), configured the same way (the ``DYSTREAM_*``
and ``LIVEKIT_*`` variables, ``.env``). ``dystream start`` adds what livekit's entry point has no option for: the
drain timeout, the dispatch keeper (rooms whose agent is gone are dispatched again) and this app's log format.
``agent/avatar_app.py`` is the same for the remote avatar worker.
"""

import os

from agent.errors import exit_on_user_error

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads (agent/__main__.py says why)

with exit_on_user_error("start"):
    from agent.worker import build_server
    from config.settings import get_settings

    server = build_server(get_settings())
