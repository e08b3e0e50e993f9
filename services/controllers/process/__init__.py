"""The `process` controller (version V1.0.0): instances are local
operating-system processes, configured from the cluster's parameters (see
`settings` for the keys, `template` for the placeholder syntax). Run it with
`python -m controllers.process --work-dir DIR ...`.

Modules: `settings` (parameters -> ProcessSettings), `template` (the
placeholder language), `spec` (rendering an instance's launch spec),
`workdir` (per-instance directories and pid files), `procs` (spawning,
signalling, adopting OS processes), `readiness` (probes), `controller` (the
operations).
"""

from controllers.process.controller import ProcessController

NAME = "process"
VERSION = "V1.0.0"
ALIASES: tuple[str, ...] = ()

__all__ = ["ALIASES", "NAME", "VERSION", "ProcessController"]
