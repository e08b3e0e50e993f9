"""python -m controllers.ec2: run the ec2 controller."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import click

from controllers.ec2 import ALIASES, NAME, VERSION, Ec2Controller
from controllers.ec2.settings import ClientSettings
from orchestration_sdk import run_controller

OPTIONS = [
    click.Option(["--region"], envvar="ORCH_EC2_REGION", default=None,
                 help="AWS region (default: AWS_REGION or AWS_DEFAULT_REGION, else us-east-1)."),
    click.Option(["--endpoint-url"], envvar="ORCH_EC2_ENDPOINT_URL", default="",
                 help="EC2 endpoint other than AWS's own (a moto server, a VPC endpoint)."),
    click.Option(["--credentials-file"], envvar="ORCH_EC2_CREDENTIALS_FILE", default=None,
                 type=click.Path(exists=True, dir_okay=False),
                 help="AWS credentials file (INI: aws_access_key_id, aws_secret_access_key) to use instead of "
                      "the environment's credentials; --profile picks the section (default: default)."),
    click.Option(["--profile"], envvar="ORCH_EC2_PROFILE", default="",
                 help="Profile of --credentials-file, or of the shared AWS files when no file is named."),
    click.Option(["--concurrency"], envvar="ORCH_EC2_CONCURRENCY", default=8, show_default=True,
                 type=click.IntRange(1, 256), help="EC2 API calls in flight at once."),
    click.Option(["--call-timeout"], envvar="ORCH_EC2_CALL_TIMEOUT", default=20.0, show_default=True,
                 type=click.FloatRange(0.1, 600), help="Seconds to wait for one API call's answer (read time-out)."),
    click.Option(["--connect-timeout"], envvar="ORCH_EC2_CONNECT_TIMEOUT", default=5.0, show_default=True,
                 type=click.FloatRange(0.1, 120), help="Seconds to wait for a connection to EC2."),
    click.Option(["--max-attempts"], envvar="ORCH_EC2_MAX_ATTEMPTS", default=3, show_default=True,
                 type=click.IntRange(1, 20), help="Attempts per API call (botocore's standard retries), the first included."),
    click.Option(["--poll-max"], envvar="ORCH_EC2_POLL_MAX", default=5.0, show_default=True,
                 type=click.FloatRange(0.25, 60), help="Longest pause between two reads while waiting on a state."),
]


def settings_of(options: Mapping[str, Any]) -> ClientSettings:
    """The controller's settings from its options."""
    region = options.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return ClientSettings(region=region, endpoint_url=options.get("endpoint_url") or "",
                          credentials_file=options.get("credentials_file") or "", profile=options.get("profile") or "",
                          concurrency=options["concurrency"], connect_timeout=options["connect_timeout"],
                          call_timeout=options["call_timeout"], max_attempts=options["max_attempts"],
                          poll_max=options["poll_max"])


def build(options: Mapping[str, Any]) -> Ec2Controller:
    return Ec2Controller(settings_of(options))


def main() -> None:
    run_controller(build, name=NAME, version=VERSION, aliases=ALIASES, options=OPTIONS)


if __name__ == "__main__":
    main()
