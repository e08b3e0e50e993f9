"""The store: NATS JetStream key-value buckets and streams.

``kvstore`` (buckets, compare-and-set and fenced writes, retries),
``streams`` (making buckets and streams, caps and retention), ``keys`` (the
key layout), ``subjects`` (subject and bucket names), ``repository`` (one
entry point composed of typed stores: ``model_store``,
``solution_store``, ``task_store``, ``access`` (tokens and the audit
trail) and ``leases`` (solution leases and controller registrations); it
hands out no raw bucket), ``requests`` (the internal request channel),
``events`` (the events stream), ``natsusers`` (the NATS users and their
permissions), and ``wire`` (connections, and every touch of nats-py's
internals and JetStream's wire formats).
"""
