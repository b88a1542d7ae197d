"""The id of the request (or background job) being served, carried in a ``contextvars`` variable.

Only the HTTP layer and the job runner set it (with :func:`request_context`); everything else just
logs, and :class:`RequestIdFilter` stamps the id onto each record. Coroutines run through
``Deferred.fromCoroutine`` keep the context they were started in, so the id follows the request
across ``await`` points without any home-made log-context machinery.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager

#: The current request or job id; ``None`` outside any request.
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

#: What records show when no request is in progress.
NO_REQUEST = "-"


@contextmanager
def request_context(rid: str) -> Iterator[None]:
    """Sets :data:`request_id` to ``rid`` for the duration of the block, then restores it."""
    token = request_id.set(rid)
    try:
        yield
    finally:
        request_id.reset(token)


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` (the current request id, or ``"-"``) to every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Stamps the record; never drops it."""
        if not isinstance(getattr(record, "request_id", None), str):
            record.request_id = request_id.get() or NO_REQUEST
        return True
