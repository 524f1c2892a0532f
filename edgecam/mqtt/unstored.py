"""Events the disk refused (read-only storage), published from memory once per connection; not durable.

The agent hands them over with ``Publisher.send_unstored``; the publisher's worker sends them after the outbox's
rows, within ``mqtt.max_inflight``. Nothing marks them delivered: they go to the outbox once the disk takes them.
"""

from collections.abc import Callable, Set
from dataclasses import dataclass


@dataclass(frozen=True)
class InMemory:
    """An event the disk refused, published from memory as well as the connection allows (not durable)."""

    seq: int
    payload: bytes
    """The event's JSON, as the outbox will store it once the disk takes it."""
    still_topic: str | None = None
    jpeg: bytes = b""


class Unstored:
    """The events waiting in memory and which of them went out on the current connection.

    ``hold`` is called from the agent's thread; everything else from the publisher's worker.
    """

    def __init__(self, max_inflight: int) -> None:
        self._max_inflight = max_inflight
        self._rows: tuple[InMemory, ...] = ()
        self._fault: str | None = None
        self._gen = 0
        self._sent: set[int] = set()
        """Seqs of the rows published on connection ``_gen``."""
        self._mids: set[int] = set()

    @property
    def fault(self) -> str | None:
        """What is wrong with the storage, or None while the disk takes the rows."""
        return self._fault

    def hold(self, rows: list[InMemory], fault: str | None) -> None:
        """Keep ``rows``, replacing the previous ones, and ``fault``."""
        self._rows, self._fault = tuple(rows), fault

    def carries(self, mid: int) -> bool:
        """Message ``mid`` of the current connection is (part of) an event sent from memory."""
        return mid in self._mids

    def published(self, mid: int) -> None:
        """Message ``mid`` carries (part of) an event sent from memory."""
        self._mids.add(mid)

    def send(self, gen: int, unacked: Set[int], rows_in_flight: int, send_row: Callable[[InMemory], None]) -> None:
        """Call ``send_row`` for each row not yet sent on connection ``gen``, while there is room in flight.

        ``unacked`` holds the connection's unacknowledged message ids, ``rows_in_flight`` the outbox rows it has in
        flight; ``send_row`` reports each message id it publishes with ``published``.
        """
        if gen != self._gen:
            self._gen, self._sent, self._mids = gen, set(), set()
        self._mids &= unacked  # the ones not yet acknowledged
        room = self._max_inflight - rows_in_flight - (len(self._mids) + 2) // 3
        for row in self._rows:
            if room <= 0:
                return
            if row.seq in self._sent:
                continue
            send_row(row)
            self._sent.add(row.seq)
            room -= 1
