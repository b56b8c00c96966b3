"""Messages the broker acknowledged but routed to nobody, held in the spool for a later resend.

Why: an MQTT 5 broker answers a QoS 1 PUBLISH that matched no subscription with a PUBACK
carrying reason code 16 ("No matching subscribers"). It is a success code: the broker took the
message and threw it away. Normally the spool deletes the message, as for any PUBACK. That loses
data in one common case: consumers on a shared subscription (``$share/GROUP/...``). Mosquitto
(2.0.x) does not keep shared subscriptions across a restart, the agents reconnect before the
consumers resubscribe, and whatever they send in that window reaches nobody.

With ``mqtt.hold_unrouted_s`` > 0 (MQTT 5 only; 0, the default, keeps today's behaviour) the
sender does not delete such a message: it stays in the spool and is registered here, due for a
resend ``hold_unrouted_s`` seconds later. Each resend that is again answered with code 16 starts
a new delay, so one message goes out at most once per delay (plus once per reconnect, when the
whole spool is replayed anyway): no tight loop when no consumer ever comes. A held message
leaves the spool when a resend is routed (a PUBACK without code 16) or when the spool's own
bounds drop it (``max_age``, ``max_messages``, ``max_bytes``; counted under those reasons):
held messages are not on the wire, so ``Spool.trim`` may drop them, oldest first.

Order: due messages are resent before anything newer in the same sender step, in spool order
among themselves. Messages published after a held one are not stopped behind it (that would
stall every topic for one that has no consumer), so a consumer may see those first: ``seq``
tells it the order.

Retained messages are never held: the broker stores them and gives them to the next subscriber.
A new connection forgets the held list: the cursor rewinds to 0 and the spool is sent again
from its start, held messages included.

Not thread-safe, like the spool: the sender thread owns it; ``counters()`` only reads numbers.
"""

from __future__ import annotations

import collections
import time
from typing import Any, Callable, Dict, List, OrderedDict

from agent.publish.spool_store import Message

NO_MATCHING_SUBSCRIBERS = 16  # MQTT 5 reason code (0x10) of a PUBACK that reached no subscriber


def is_unrouted(reason: Any) -> bool:
    """Whether a PUBACK reason (paho ``ReasonCode``, or an int) is "No matching subscribers"."""
    value = getattr(reason, "value", reason)
    return isinstance(value, int) and value == NO_MATCHING_SUBSCRIBERS


class Unrouted:
    """Held messages by spool id, each with the time of its next resend.

    The delay is the same for all, so the insertion order is the due order: ``due()`` reads
    only the front of the list, however many messages wait.
    """

    def __init__(self, delay: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.delay = delay
        self.clock = clock
        self.held: OrderedDict[int, Message] = collections.OrderedDict()  # spool id -> message
        self._due: Dict[int, float] = {}
        self.seen = 0  # PUBACKs with code 16, held or not
        self.resent = 0  # held messages sent again

    @property
    def enabled(self) -> bool:
        return self.delay > 0

    def __len__(self) -> int:
        return len(self.held)

    def note(self, msg: Message) -> bool:
        """A PUBACK said ``msg`` reached nobody. True when it is held (it stays in the spool);
        False when the caller deletes it as acknowledged (holding off, or a retained message)."""
        self.seen += 1
        if not self.enabled or msg.retain or not msg.id:
            return False
        self.held.pop(msg.id, None)  # to the end of the due order
        self.held[msg.id] = msg
        self._due[msg.id] = self.clock() + self.delay
        return True

    def due(self, limit: int) -> List[Message]:
        """Up to ``limit`` messages whose delay has passed, in spool order; they leave the list
        (the caller sends them: a new code 16 holds them again)."""
        if not self.held or limit <= 0:
            return []
        now = self.clock()
        out: List[Message] = []
        for msg_id in self.held:
            if self._due[msg_id] > now or len(out) >= limit:
                break
            out.append(self.held[msg_id])
        for msg in out:
            del self.held[msg.id]
            del self._due[msg.id]
        self.resent += len(out)
        out.sort(key=lambda m: m.id)
        return out

    def put_back(self, messages: List[Message]) -> None:
        """``due()`` messages that could not be sent after all: held again for another delay."""
        for msg in messages:
            self.held[msg.id] = msg
            self._due[msg.id] = self.clock() + self.delay
        self.resent -= len(messages)

    def forget(self, ids: List[int]) -> None:
        """Stop tracking ``ids`` (the spool dropped them)."""
        for msg_id in ids:
            self.held.pop(msg_id, None)
            self._due.pop(msg_id, None)

    def clear(self) -> None:
        """A new connection: the spool is replayed from its start, held messages included."""
        self.held.clear()
        self._due.clear()

    def counters(self) -> Dict[str, int]:
        """``unrouted`` (PUBACKs with code 16), ``unrouted_held`` (waiting now), ``unrouted_resent``."""
        return {"unrouted": self.seen, "unrouted_held": len(self.held), "unrouted_resent": self.resent}


__all__ = ["NO_MATCHING_SUBSCRIBERS", "Unrouted", "is_unrouted"]
