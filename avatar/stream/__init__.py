"""The real-time engine (not in the official release; docs/architecture.md §9): one frame every 40 ms from
two live audio streams. ``engine.AvatarStream`` runs the clock and the model threads; ``core.StreamCore`` is one
session's step (audio windows, transformer, head, renderer); ``batch.SessionBatch`` steps several conversations as
one batch; the rest are their parts: the step's stages (``stages``: traced or CUDA-graphed; ``traced``, ``cuda``),
their warm-up and timing, the start noise, the incremental audio encoding, the 40 ms clock and queues, the handoff
between the clock and the threads and their priority, the quality ladder and its keyframes, the device's capacity,
the engine's figures, and what the engine hands out (``frames``, through ``outbox``).

Nothing is imported here, so that ``avatar.stream.frames`` reads without loading torch."""
