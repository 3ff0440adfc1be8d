"""What runs a hub in a process: the dedicated event-loop thread, the
notifier that commits the hub's batches on it and wakes the writers, what
a forked child does with the server's sockets, and the process's hooks (at
exit, uncaught exceptions, after fork), installed by the first server or
store that needs them."""
