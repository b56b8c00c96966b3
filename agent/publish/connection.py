"""Broker connection settings and paho clients: TLS, credentials, last will, session, backoff.

The publisher makes one paho client per connection (``new_client``): ``connect_async`` +
``loop_start`` run the network thread, and when that connection fails or drops the
client is thrown away and the next one made after a backoff with jitter. Why not paho's
own reconnect loop:

- paho keeps unacknowledged QoS 1 messages in its own memory and resends them on its
  reconnect; the publisher must do that itself, from the spool, in order, so the two
  would both resend. A fresh client holds nothing, and the spool is the only truth.
- paho's backoff doubles without jitter; after a broker restart a fleet of devices would
  reconnect in lockstep. Ours draws each delay from [d/2, d].
- paho's ``on_connect_fail`` does not say why; ``_Client`` keeps the socket error so the
  log and ``counters()["last_error"]`` can say "certificate verify failed" or
  "connection refused".

Credentials are resolved once at start and never appear in logs (``Endpoint`` has no
password in its repr; ``mask`` strips it from any text we log).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import socket
import ssl
import threading
from typing import Any, Optional

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config.schema import MASK, AgentConfig, MqttConfig, TlsConfig
from agent.errors import PublishError

log = logging.getLogger(__name__)
paho_log = logging.getLogger("agent.publish.paho")


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """Where and how to connect; built once from the config by ``from_config``."""

    host: str
    port: int
    client_id: str
    keepalive: int
    protocol: str  # "3.1.1" | "5"
    username: Optional[str]
    password: Optional[str] = dataclasses.field(repr=False)
    tls: Optional[ssl.SSLContext] = dataclasses.field(repr=False)
    tls_insecure: bool
    session_expiry: int
    connect_timeout: float

    @classmethod
    def from_config(cls, config: AgentConfig) -> Endpoint:
        mq = config.mqtt
        try:
            password = mq.resolve_password()
        except OSError as exc:
            raise PublishError(f"mqtt.password_file: cannot read {mq.password_file}: "
                               f"{exc.strerror or exc}") from None
        if password is not None and mq.username is None:
            raise PublishError("mqtt.password is set but mqtt.username is not; MQTT sends a password "
                               "only with a user name")
        return cls(host=mq.host, port=mq.port, client_id=config.mqtt_client_id, keepalive=mq.keepalive,
                   protocol=mq.protocol, username=mq.username, password=password,
                   tls=tls_context(mq.tls) if mq.tls.enabled else None, tls_insecure=mq.tls.insecure,
                   session_expiry=mq.session_expiry, connect_timeout=mq.connect_timeout)

    @property
    def url(self) -> str:
        """``mqtt(s)://host:port`` (never credentials)."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def mask(self, text: str) -> str:
        """``text`` with the password replaced, for anything that may echo it back."""
        return text.replace(self.password, MASK) if self.password else text


def tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """A client context: certificate and host name checked unless ``insecure`` is set."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname=True, CERT_REQUIRED
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if tls.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    try:
        if tls.ca_file:
            ctx.load_verify_locations(cafile=tls.ca_file)
        else:
            ctx.load_default_certs()
    except (OSError, ssl.SSLError) as exc:
        raise PublishError(f"mqtt.tls.ca_file: cannot load {tls.ca_file}: {exc}") from None
    if tls.cert_file and tls.key_file:
        try:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise PublishError(f"mqtt.tls.cert_file / key_file: cannot load {tls.cert_file} with "
                               f"{tls.key_file}: {exc}") from None
    if tls.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        log.warning("mqtt.tls.insecure is true: the broker's certificate and host name are NOT checked; "
                    "anyone on the network path can read and forge messages")
    return ctx


def backoff_delay(attempt: int, low: float, high: float, rng: Optional[random.Random] = None) -> float:
    """Delay before reconnect attempt ``attempt`` (0-based): ceiling ``min(high, low * 2**attempt)``,
    drawn uniformly from [ceiling/2, ceiling] so devices that lost one broker spread out."""
    ceiling = min(high, low * (2.0 ** min(attempt, 40)))
    return (rng or random).uniform(ceiling / 2.0, ceiling)


class _Client(paho.Client):
    """A paho client that remembers why its last connection attempt failed."""

    socket_error: Optional[BaseException] = None

    def _create_socket(self) -> Any:  # paho internal; without it we only lose the detail
        try:
            return super()._create_socket()  # type: ignore[misc]  # paho's private method, untyped
        except OSError as exc:
            self.socket_error = exc
            raise


def _no_delay(client: paho.Client, userdata: Any, sock: Any) -> None:
    # Small PUBLISH packets otherwise wait for Nagle's algorithm (up to 40 ms with delayed ACKs).
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def new_client(endpoint: Endpoint, *, will_topic: str, will_qos: int, inflight_max: int) -> paho.Client:
    """A configured client (not connected): callback API 2, persistent session, last will."""
    v5 = endpoint.protocol == "5"
    kwargs: dict = {"callback_api_version": paho.CallbackAPIVersion.VERSION2, "client_id": endpoint.client_id,
                    "protocol": paho.MQTTv5 if v5 else paho.MQTTv311, "reconnect_on_failure": False}
    if not v5:
        kwargs["clean_session"] = False  # keep the session (our subscriptions, queued commands)
    client = _Client(**kwargs)
    if paho_log.isEnabledFor(logging.DEBUG):
        # paho's own log is packet-level detail; a thrown-away client also logs errors about
        # its closed socket that mean nothing. Outcomes reach our log through the callbacks.
        client.enable_logger(paho_log)
    # Headroom over our window for status and discovery messages, which bypass the spool.
    client.max_inflight_messages_set(inflight_max + 64)
    client.max_queued_messages_set(0)
    # paho's first connect is retried internally even with reconnect_on_failure=False; a long
    # delay keeps it from racing our own loop, which throws this client away first.
    client.reconnect_delay_set(3600, 3600)
    if hasattr(client, "connect_timeout"):
        client.connect_timeout = endpoint.connect_timeout
    if endpoint.username is not None:
        client.username_pw_set(endpoint.username, endpoint.password)
    if endpoint.tls is not None:
        client.tls_set_context(endpoint.tls)
        if endpoint.tls_insecure:
            client.tls_insecure_set(True)
    client.will_set(will_topic, b"offline", qos=will_qos, retain=True)
    client.on_socket_open = _no_delay
    return client


def connect_async(client: paho.Client, endpoint: Endpoint) -> None:
    """Start connecting in paho's network thread; the outcome arrives through callbacks."""
    if endpoint.protocol == "5":
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = endpoint.session_expiry
        client.connect_async(endpoint.host, endpoint.port, endpoint.keepalive, clean_start=False,
                             properties=props)
    else:
        client.connect_async(endpoint.host, endpoint.port, endpoint.keepalive)
    client.loop_start()


def publish_properties(props: Optional[dict]) -> Optional[Properties]:
    """MQTT 5 PUBLISH properties from a spooled message's ``props`` (correlation data as hex)."""
    if not props or "correlation_data" not in props:
        return None
    out = Properties(PacketTypes.PUBLISH)
    out.CorrelationData = bytes.fromhex(props["correlation_data"])
    return out


def describe_failure(client: paho.Client, endpoint: Endpoint) -> str:
    """Why the last connection attempt of ``client`` failed, in words a user can act on."""
    exc = getattr(client, "socket_error", None)
    if exc is None:
        return f"cannot connect to {endpoint.url}"
    text = endpoint.mask(str(exc) or type(exc).__name__)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"TLS certificate check failed for {endpoint.url}: {text} (check mqtt.tls.ca_file and that "
                "mqtt.host is a name in the broker's certificate)")
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake with {endpoint.url} failed: {text}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve broker host {endpoint.host!r}: {text}"
    return f"cannot connect to {endpoint.url}: {text}"


def describe_refusal(reason: Any, endpoint: Endpoint) -> str:
    """A CONNACK refusal, with the config keys that fix the usual causes."""
    text = str(reason)
    hint = ""
    lowered = text.lower()
    if "authoriz" in lowered or "user name" in lowered or "password" in lowered:
        hint = " (check mqtt.username and mqtt.password / password_file; the broker's ACL may also deny " \
               "this client)"
    elif "identifier" in lowered:
        hint = " (check mqtt.client_id)"
    return f"{endpoint.url} refused the connection: {text}{hint}"


def wire_qos(mq: MqttConfig, topic_class: str) -> int:
    """The QoS actually used for a topic class: 2 is sent as 1.

    Each connection is a fresh client whose packet ids start again, and a broker keeps the
    ids of unfinished QoS 2 exchanges in the session: a new message reusing such an id would
    be taken for the old one and dropped. At-least-once with the spool, duplicates marked by
    ``seq``, loses nothing; exactly-once would need packet ids that survive reconnects.
    """
    return min(1, mq.qos_for(topic_class))


def _close_client(client: paho.Client) -> None:
    try:
        client.disconnect()
        client.loop_stop()
    except Exception as exc:  # a dying client must not take anything with it
        log.debug("client teardown: %s", exc)


def close_in_background(client: paho.Client) -> threading.Thread:
    """Disconnect and stop ``client`` on a daemon thread of its own: ``loop_stop`` joins paho's
    thread, which may sit in a TCP connect, and the caller must not wait for that."""
    thread = threading.Thread(target=_close_client, args=(client,), name="mqtt-teardown", daemon=True)
    thread.start()
    return thread


__all__ = ["Endpoint", "backoff_delay", "close_in_background", "connect_async", "describe_failure",
           "describe_refusal", "new_client", "publish_properties", "tls_context", "wire_qos"]
