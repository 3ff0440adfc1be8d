"""Real servers, clients and processes: the transports, server, manager, CLI, ports, and the dashboard."""
