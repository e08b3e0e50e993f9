"""Running one solution's request: its intent written (intent, snapshot), its
run (executor) made of the scheduler (gates, concurrency, retries on an
injected clock), the operation path (operations), settling and roll-up
(settling), the task book (tasks) and what is stored around the first
operation (opening), over the run's view of the solution (state). A run
knows nothing of leases beyond being told it lost one."""
