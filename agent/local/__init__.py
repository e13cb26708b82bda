"""Running LiveKit on this machine: the official server and the workers as subprocesses (the playground, the
end-to-end tests and the benchmarks)."""
