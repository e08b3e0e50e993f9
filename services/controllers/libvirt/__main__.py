"""python -m controllers.libvirt: run the libvirt controller."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from controllers.libvirt import ALIASES, NAME, VERSION, LibvirtController
from controllers.libvirt.hypervisor import PASSWORD_ENV, USERNAME_ENV, Credentials, Hypervisor
from orchestration_sdk import run_controller

OPTIONS = [
    click.Option(["--uri"], envvar="ORCH_LIBVIRT_URI", default="qemu:///system", show_default=True,
                 help="The libvirt connection URI (test:///default: libvirt's built-in test driver, whose domains "
                      "live inside this process and are gone when it stops). Put no password in it: see --auth-file."),
    click.Option(["--concurrency"], envvar="ORCH_LIBVIRT_CONCURRENCY", type=click.IntRange(1, 256), default=8,
                 show_default=True, help="libvirt calls under way at once (threads of the pool they run in)."),
    click.Option(["--call-timeout"], envvar="ORCH_LIBVIRT_CALL_TIMEOUT", type=click.FloatRange(0.1, 3600), default=30.0,
                 show_default=True, help="Seconds one libvirt call may take before the operation fails, retryable."),
    click.Option(["--auth-file"], envvar="ORCH_LIBVIRT_AUTH_FILE", type=click.Path(exists=True, dir_okay=False),
                 default=None, help=f"File of 'username=...' and 'password=...' lines for a URI that asks for "
                                    f"credentials (SASL, ssh password); default: ${USERNAME_ENV} and ${PASSWORD_ENV}."),
]


def build(options: Mapping[str, Any]) -> LibvirtController:
    """The libvirt controller configured from its own command-line options."""
    credentials = Credentials.load(options.get("auth_file"))
    hypervisor = Hypervisor(options["uri"], credentials, int(options["concurrency"]), float(options["call_timeout"]))
    return LibvirtController(hypervisor)


def main() -> None:
    run_controller(build, name=NAME, version=VERSION, aliases=ALIASES, options=OPTIONS)


if __name__ == "__main__":
    main()
