"""The in-flight window over the spool: which spooled messages are on the wire.

Messages go out in spool-id order through a window of ``mqtt.inflight_max`` unacknowledged
ones (held "unrouted" ones first: they are older); each PUBACK settles one: acknowledged
(it leaves the spool), held for a resend (``mqtt.hold_unrouted_s``, unrouted.py) or refused
(counted as a drop). A lost connection empties the window and moves the cursor back to the
start, so the next connection sends every unacknowledged message again, oldest first. Used by
the sender thread only (sender.py).
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

import paho.mqtt.client as paho

from agent.publish import connection
from agent.publish.sender_stats import SenderStats
from agent.publish.spool import Message
from agent.publish.unrouted import Unrouted, is_unrouted

log = logging.getLogger(__name__)

_BATCH = 256  # messages read from the spool at a time


class InflightWindow:
    """See the module docstring."""

    def __init__(self, inflight_max: int, hold_unrouted_s: float, stats: SenderStats) -> None:
        self.inflight_max = inflight_max
        self.stats = stats
        self.inflight: Dict[int, Message] = {}  # by paho message id
        self.cursor = 0  # the newest spool id sent on this connection
        self.replay_upto = 0  # spool ids up to this one were sent before: a resend is a replay
        self.unrouted = Unrouted(hold_unrouted_s)  # acknowledged, reached nobody, resent later

    def lost(self) -> None:
        """The connection went: nothing is in flight; the next one starts from the oldest."""
        self.inflight.clear()
        self.unrouted.clear()  # the cursor goes back to 0: the replay sends them again
        self.replay_upto = max(self.replay_upto, self.cursor)
        self.cursor = 0

    def idle(self, spool: Any) -> bool:
        """Nothing in flight and nothing in the spool left to send on this connection."""
        return not self.inflight and not spool.has_after(self.cursor)

    def send(self, client: paho.Client, spool: Any, connected: bool) -> None:
        """Fill the window from the spool while ``connected`` lasts."""
        while connected:
            room = self.inflight_max - len(self.inflight)
            resend = self.unrouted.due(min(room, _BATCH))  # held ones first: they are older
            batch = resend or (spool.after(self.cursor, min(room, _BATCH)) if room > 0 else [])
            if not batch:
                return
            for i, msg in enumerate(batch):
                try:
                    info = client.publish(msg.topic, msg.payload, msg.qos, msg.retain,
                                          properties=connection.publish_properties(msg.props))
                except ValueError as exc:  # e.g. a topic paho refuses: it can never be sent
                    log.error("cannot publish on %r: %s; message dropped", msg.topic, exc)
                    spool.remove([msg])
                    self.stats.drop("invalid", str(exc))
                    continue
                if info.rc != paho.MQTT_ERR_SUCCESS:
                    self.unrouted.put_back(batch[i:] if resend else [])
                    return  # the connection just went; its event follows, the spool keeps the message
                self.inflight[info.mid] = msg
                self.cursor = max(self.cursor, msg.id)
                self.stats.bump("sent")
                if msg.id <= self.replay_upto and not resend:
                    self.stats.bump("replayed")

    def acknowledged(self, mid: int, reason: Any, acked: List[Message]) -> Optional[bool]:
        """Settle the PUBACK of ``mid``: None when it is no message of the window (the status),
        else whether the message leaves the spool (appended to ``acked``)."""
        msg = self.inflight.pop(mid, None)
        if msg is None:
            return None
        if getattr(reason, "is_failure", False):
            self.stats.drop("refused", f"the broker refused a message on {msg.topic}: {reason}")
        elif is_unrouted(reason) and self.unrouted.note(msg):
            return False  # stays in the spool, sent again after mqtt.hold_unrouted_s
        else:
            self.stats.bump("acked")
            self.stats.bump_published(msg.topic)
        acked.append(msg)
        return True
