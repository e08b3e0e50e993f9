"""Who runs which solution: the replica (replica) takes requests from the
internal channel, claims and renews leases, resumes what a dead replica
left, passes terminations on to its runs, frees ended runs, and serves
controller registration (registration). It starts runs (dispatcher.run) and
never reaches into them."""
