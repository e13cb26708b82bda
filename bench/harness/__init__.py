"""The end-to-end harness shared by ``tests/e2e`` and ``python -m bench.e2e``: a real LiveKit server, the workers as
subprocesses, a user client, and the receiver-side measurements."""
