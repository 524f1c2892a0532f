"""Between capture and the outbox: events appended in capture order, held in memory while the disk refuses them.

``OutboxWriter`` does it in a thread of its own, stills developed (masked, encoded, hashed) on the way, so that the
frame loop hands events over and goes on.
"""

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace

from edgecam.capture import Captured, Emitted
from edgecam.config import StorageSettings
from edgecam.errors import StorageError
from edgecam.models import Event, Still
from edgecam.mqtt.publisher import InMemory
from edgecam.outbox import Outbox, SeqTaken, payload_bytes
from edgecam.state_dir import storage_fault

logger = logging.getLogger(__name__)

SWEEP_EVERY_S = 3600.0
"""How often delivered events past ``storage.retention_days`` are deleted."""
RETRY_STORE_S = 5.0
"""How often events that could not be stored (a full disk) are tried again."""
IDLE_CHECK_S = 1.0
"""How often the outbox thread, with nothing new, retries a refusing disk and checks whether a sweep is due."""
MAX_WAITING_STILLS = 20
"""Stills whose JPEG is kept in memory while the disk refuses even event rows."""


Announce = Callable[[list[InMemory], str | None], None]
"""Receives what waits in memory (to publish it from there) and the storage fault, or ([], None) once stored."""


class Store:
    """Appends events to the outbox in capture order; holds them in memory while the disk refuses them.

    Each event gets its seq here, from the outbox's counter, when it is captured: one that waits in memory (and
    may be published from there) keeps it when the disk takes it later, so the same seq is the same message.
    A seq given out in memory and lost with the process (the agent stopped before the disk came back) may be
    given again after a restart. A row another process adds (``edgecam forget``) takes the next seq of the
    outbox's counter: what waits is numbered after it.
    """

    def __init__(
        self, outbox: Outbox, clock: Callable[[], float] = time.monotonic, announce: Announce | None = None
    ) -> None:
        self._outbox = outbox
        self._clock = clock
        self._announce = announce
        self._waiting: deque[tuple[int, Event, Still | None]] = deque()
        self._seq = outbox.last_seq()
        self._fault: str | None = None
        self._retry_at = 0.0
        self._swept_at = clock()

    def put(self, emitted: list[Emitted]) -> bool:
        """Queue ``emitted`` behind anything still waiting and store what the disk takes; True if any was stored."""
        for event, still in emitted:
            self._seq += 1
            self._waiting.append((self._seq, event, still))
        now = self._clock()
        if now - self._swept_at >= SWEEP_EVERY_S:
            self._swept_at = now
            try:
                self._outbox.sweep()
            except StorageError as err:
                logger.error("%s", err)
        if not self._waiting or (now < self._retry_at and not emitted):
            return False
        return self.flush()

    def flush(self, final: bool = False) -> bool:
        """Store what waits, oldest first; True if anything was stored."""
        stored = False
        while self._waiting:
            seq, event, still = self._waiting[0]
            try:
                self._outbox.append(event, still, seq)
            except SeqTaken:
                self._renumber()
                continue
            except StorageError as err:
                self._retry_at = self._clock() + RETRY_STORE_S
                if final:
                    logger.error("%s; %d events could not be stored and are lost", err, len(self._waiting))
                else:
                    fault = storage_fault(self._outbox.storage)
                    self._fault = err.args[0] if fault == "ok" else fault
                    waiting = len(self._waiting)
                    logger.warning("%s; %d events wait in memory and go to the broker from there", err, waiting)
                    self._trim()
                    if self._announce is not None:
                        self._announce(self._in_memory(), self._fault)
                return stored
            self._waiting.popleft()
            stored = True
        if self._fault is not None:
            self._fault = None
            logger.info("agent: the state directory takes events again; nothing waits in memory")
            if self._announce is not None:
                self._announce([], None)
        return stored

    def _renumber(self) -> None:
        """Give what waits the seqs after the outbox's last, taken by rows another process stored meanwhile."""
        first = self._outbox.last_seq() + 1
        logger.info("outbox: another process stored events (edgecam forget); the next is seq=%d", first)
        self._waiting = deque((first + n, event, still) for n, (_, event, still) in enumerate(self._waiting))
        self._seq = first + len(self._waiting) - 1

    def _in_memory(self) -> list[InMemory]:
        """What waits, as the messages the outbox would publish (a still whose JPEG was let go says dropped)."""
        rows = []
        for seq, event, still in self._waiting:
            payload = event.payload(seq)
            topic = event.extra.get("topic")
            jpeg = still.jpeg if still is not None else b""
            if still is not None and not jpeg:
                payload["dropped"] = True
            rows.append(InMemory(seq, payload_bytes(payload), topic if isinstance(topic, str) and jpeg else None, jpeg))
        return rows

    def _trim(self) -> None:
        """Keep the JPEGs of only the newest waiting stills: the events matter more than memory for pictures."""
        stills = [i for i, (_, _, still) in enumerate(self._waiting) if still is not None and still.jpeg]
        for i in stills[: max(0, len(stills) - MAX_WAITING_STILLS)]:
            seq, event, still = self._waiting[i]
            assert still is not None
            self._waiting[i] = (seq, event, replace(still, jpeg=b""))  # stored as dropped once the disk takes rows


Develop = Callable[[Captured], Emitted]
"""Masks, encodes and hashes a still event's shot (``capture.develop`` with the settings bound); raises StorageError."""


class OutboxWriter:
    """The outbox thread: develops stills and stores events in capture order, off the frame loop.

    ``put`` never waits. At most ``max_shots`` shots wait to be developed (``room`` says whether one more may be
    taken): a camera's full-size pixels are megabytes each, and an encoder that falls behind skips stills, never
    events nor frames. The thread has its own connection to the outbox (one per thread); ``wake`` tells the
    publisher of each event stored, so a ``start`` goes out before its stills are encoded.
    """

    def __init__(
        self,
        storage: StorageSettings,
        develop: Develop,
        wake: Callable[[], None],
        announce: Announce | None = None,
        max_shots: int = 4,
    ) -> None:
        """Open the outbox in the new thread; raise StorageError when it cannot be opened."""
        self._storage = storage
        self._develop = develop
        self._wake = wake
        self._announce = announce
        self._max_shots = max_shots
        self._queue: deque[Captured] = deque()
        self._shots = 0
        self._closing = False
        self._cond = threading.Condition()
        self._opened = threading.Event()
        self._failed: StorageError | None = None
        self._thread = threading.Thread(target=self._run, name="edgecam-outbox", daemon=True)
        self._thread.start()
        self._opened.wait()
        if self._failed is not None:
            raise self._failed

    def room(self) -> bool:
        """One more shot may be taken: fewer than ``max_shots`` wait to be developed."""
        with self._cond:
            return self._shots < self._max_shots

    def put(self, captured: list[Captured]) -> None:
        """Queue ``captured`` behind what waits; returns at once."""
        if not captured:
            return
        with self._cond:
            self._queue.extend(captured)
            self._shots += sum(shot is not None for _, shot in captured)
            self._cond.notify()

    def close(self) -> None:
        """Develop and store everything queued, then stop the thread; safe to call twice."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        try:
            outbox = Outbox(self._storage)
        except StorageError as err:
            self._failed = err
            self._opened.set()
            return
        self._opened.set()
        store = Store(outbox, announce=self._announce)
        try:
            while True:
                with self._cond:
                    if not self._queue:
                        if self._closing:
                            break
                        self._cond.wait(timeout=IDLE_CHECK_S)
                    item = self._queue.popleft() if self._queue else None
                try:
                    stored = store.put([]) if item is None else store.put([self._developed(item)])
                except Exception:
                    logger.exception("outbox: an event could not be stored")
                    stored = False
                if stored:
                    self._wake()
            store.flush(final=True)
        finally:
            outbox.close()

    def _developed(self, item: Captured) -> Emitted:
        """``item`` with its still developed; a still the encoder refuses is stored as dropped (no bytes)."""
        event, shot = item
        if shot is None:
            return event, None
        try:
            return self._develop(item)
        except StorageError as err:
            index = event.extra["index"]
            logger.error("capture: still %s of event %s not encoded: %s", index, event.event_id, err)
            return event, Still(event.event_id, index, b"", "", 0, 0)
        finally:
            with self._cond:
                self._shots -= 1
