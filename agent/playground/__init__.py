"""`dystream playground`: the avatar in a browser with one command.

It starts a LiveKit server on loopback (a fresh key, ``sync_streams`` on), the agent worker (and in remote mode the
avatar worker) as subprocesses, and a small web page on localhost that joins a fresh room with the microphone and
shows the avatar, its ``dystream.state``, the agent's transcript and live figures. The page loads ``livekit-client``
from the npm package ``scripts/install.sh`` installs next to it; nothing comes from a CDN.
"""
