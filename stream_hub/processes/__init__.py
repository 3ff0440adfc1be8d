"""Many processes, one hub: the processes of a user on one machine share the
hub of their ports. The first hosts, the others join; when the host leaves
cleanly it hands its history to one of them; when it dies, one of them is
elected through the registry lock; a forked child forwards to its parent's.

- ``registry`` — where processes meet: one private record per hub;
- ``rendezvous`` — join, wait, or host on which ports (never ending a live
  process: only a hung hub of this user, in development);
- ``channel`` — the framed messages between a joiner and its host;
- ``host`` — the host's side: joiners, their batches, ``/api/sources``;
- ``joined`` — the joined side: the forwarder;
- ``handover`` — a clean host stop with joiners connected;
- ``membership`` — the server's roles among these processes.
"""
