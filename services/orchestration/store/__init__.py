"""The store: NATS JetStream key-value buckets and streams.

``kvstore`` (buckets, compare-and-set writes, retries), ``keys`` (the key
layout), ``repository`` (the typed stores composed into one entry point:
model, solution records, task records), ``leases`` (who owns a solution),
``requests`` (the internal request channel), ``events`` and ``publisher``
(the external bus), ``subjects`` (subject names), ``registrations``
(controllers' addresses), ``natsconn`` (connecting with credentials).
"""
