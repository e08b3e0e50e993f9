"""The `libvirt` controller (version V1.0.0, alias `vm`): instances are
virtual machines, libvirt domains defined, booted, shut down and undefined
through libvirt-python. Run it with `python -m controllers.libvirt --uri
qemu:///system ...` (tests use libvirt's built-in `test:///default` driver).

Modules: `settings` (cluster parameters -> VmSettings), `domainxml` (the
domain XML and the metadata that names an instance's domain), `hypervisor`
(one libvirt connection: blocking calls in a bounded thread pool, each a
span, with a time-out; credentials), `controller` (the operations).
"""

from controllers.libvirt.controller import LibvirtController

NAME = "libvirt"
VERSION = "V1.0.0"
ALIASES: tuple[str, ...] = ("vm",)

__all__ = ["ALIASES", "NAME", "VERSION", "LibvirtController"]
