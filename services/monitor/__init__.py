"""The monitor: at an interval, asks the controllers for the real state of
every instance that has a target state, publishes status on the bus, records
drift, and asks the dispatchers (through the internal channel) for a
compensating task when a solution's current and target states differ; never
while a task runs for that solution (DESIGN.md sections 4 and 5).

Modules: `inventory` (what to ask about, read in bulk), `probe` (batched
Status calls to the controllers), `status` (bus messages and roll-up),
`drift` (correcting stored states), `compensation` (back-off and requests),
`figures` (what the last poll did), `service` (the process)."""
