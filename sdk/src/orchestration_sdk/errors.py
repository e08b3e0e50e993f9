"""How user code says that an operation failed, and whether a retry can help."""

from __future__ import annotations


class Retryable(Exception):
    """Transient trouble: the dispatcher may repeat the operation.

    `after` is the earliest sensible retry in seconds (None: the dispatcher's
    own back-off decides). Retry counting and back-off belong to the
    dispatcher; the SDK only reports the outcome.

    Example::

        if response.status == 503:
            raise Retryable("cloud API overloaded", after=5.0)
    """

    def __init__(self, message: str, after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.after = after


class Permanent(Exception):
    """A failure no retry fixes: the instance goes to `failure`.

    Wrap the cause so that it shows in the reported message::

        try:
            image = registry.lookup(ctx.parameters["image"])
        except KeyError as err:
            raise Permanent("no such image") from err
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    @property
    def message(self) -> str:
        """The reason, followed by the wrapped cause when there is one."""
        cause = self.__cause__
        if cause is None or not str(cause):
            return self.reason
        return f"{self.reason}: {cause}"
