"""How a process takes part in a hub: one role object at a time.

- ``base`` — the :class:`~stream_hub.roles.base.Role` protocol the server calls;
- ``placement`` — the one port resolver: which role, on which ports;
- ``facts`` — the machine as the resolver sees it, and what is done before binding;
- ``hosting`` — ``"host"``: serving the hub;
- ``joined`` — ``"joined"`` / ``"forked"``: forwarding to another process's hub;
- ``publishing`` — ``"publisher"``: sending to Redis, serving nothing.
"""
