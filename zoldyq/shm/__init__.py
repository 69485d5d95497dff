"""The engine: queues in POSIX shared memory. Imports nothing from the transports."""
