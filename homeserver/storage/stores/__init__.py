"""Stores: one class per aggregate, each holding a ``DatabasePool`` (DESIGN 2.5).

:class:`Stores` is the container the composition root builds and hands out. Stores are composed, never
mixed in: a store that needs another receives it in its constructor.
"""

from __future__ import annotations

import dataclasses

__all__ = ["Stores"]


@dataclasses.dataclass(frozen=True)
class Stores:
    """Every store of one process (the stores themselves are added as they are written).

    Each new store becomes one field here, e.g. ``events: EventsStore``; the composition root
    constructs the stores and then this container.
    """
