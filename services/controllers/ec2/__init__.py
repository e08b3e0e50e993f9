"""The `ec2` controller (version V1.0.0): AWS EC2 through boto3. Two kinds
of component, by the cluster parameter `kind`: `network` (a VPC, a subnet
and a security group) and `server` (an EC2 instance in a network's subnet).
Everything it makes is tagged with the instance's domain, solution, element
and uuid, so that a restarted controller finds what it made. Run it with
`python -m controllers.ec2 --region REGION ...` (see `__main__` for the
settings); AWS credentials come from its environment or --credentials-file.

Modules: `settings` (options and parameters -> settings, pure), `api` (the
EC2 client: threads, concurrency, spans, errors, waiting), `network` and
`server` (the two kinds' operations), `lookup` (status lookups of many
servers or networks in one round of calls), `preview` (the dry run), `controller` (the
operations, by kind).
"""

from controllers.ec2.controller import Ec2Controller

NAME = "ec2"
VERSION = "V1.0.0"
ALIASES: tuple[str, ...] = ("aws-ec2",)

__all__ = ["ALIASES", "NAME", "VERSION", "Ec2Controller"]
