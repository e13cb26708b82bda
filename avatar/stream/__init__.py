"""The real-time engine (not in the official release; docs/architecture.md §9): one frame every 40 ms from
two live audio streams. ``engine.AvatarStream`` runs the clock and the model threads; ``core.StreamCore`` is one
step (audio windows, transformer, head, renderer); ``batch.SessionBatch`` steps several conversations as one batch;
the rest are the step's parts: the 40 ms clock and queues, the quality ladder and its keyframes, the incremental
audio encoding, traced and CUDA-graphed stages, the device's capacity, and what the engine hands out (``frames``).

Nothing is imported here, so that ``avatar.stream.frames`` reads without loading torch."""
