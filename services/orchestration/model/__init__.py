"""The information model and the lifecycle rules, pure.

Names and tokens (``names``), the common lifecycle (``lifecycle``), planning
a solution's transitions (``planner``), checking documents (``validation``),
reading and writing SolAr documents (``codec``, ``codec_fields``, ``yamlsafe``),
rendering configuration templates (``rendering``), comparing two models
(``diff``) and the errors every layer raises (``errors``).

Nothing here performs I/O or imports NATS or gRPC: the functions take values
and return values, so the rules are tested without processes.
"""
