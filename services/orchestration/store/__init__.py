"""The store: NATS JetStream key-value buckets and streams.

``kvstore`` (buckets, compare-and-set writes, retries), ``keys`` (the key
layout), ``repository`` (one entry point composed of typed stores:
``model_records``, ``solution_records``, ``task_records``, ``leases`` and
``registrations``; it hands out no raw bucket), ``requests`` (the internal
request channel), ``events`` and ``publisher`` (the external bus),
``subjects`` (subject names), ``natsconn`` (connecting with credentials).
"""
