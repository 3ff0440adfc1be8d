"""Many processes, one hub: the processes of a user on one machine share the
hub of their ports. The first hosts, the others join; when the host leaves
cleanly it hands its history to one of them; when it dies, one of them is
elected through the registry lock; a forked child forwards to its parent's.

- ``registry`` — where processes meet: one private record per hub;
- ``rendezvous`` — what a recorded hub is now (live, busy, wedged, dead, ...): the
  facts the port resolver (:mod:`stream_hub.roles.placement`) decides on;
- ``channel`` — the framed messages between a joiner and its host;
- ``host_channel`` — the host's side: joiners, their batches, ``/api/sources``;
- ``joined`` — the joined side: the forwarder;
- ``handover`` — a clean host stop with joiners connected;
- ``membership`` — a server's registry key, join token and record.
"""
