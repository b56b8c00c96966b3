"""A site Mosquitto bridged to a central one, as docs/deployment.md configures it.

``add_bridge(site, central, ...)`` appends a bridge section to the site broker's config
(before it starts): ``detection-agent/#`` out at QoS 1, a persistent bridge session
(``cleansession false``) so the site broker queues what the link cannot carry, quick
reconnects for the tests, and optionally TLS with a client certificate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

from mosquitto import Mosquitto


def add_bridge(site: Mosquitto, central: Mosquitto, name: str = "site-a",
               certs: Optional[Dict[str, Path]] = None, topic: str = "detection-agent/#") -> None:
    if certs is not None:  # the certificate names localhost: the bridge checks it against the address
        address = f"localhost:{central.tls_port}"
        tls = [f"bridge_cafile {certs['ca.crt']}", f"bridge_certfile {certs['client.crt']}",
               f"bridge_keyfile {certs['client.key']}", "bridge_insecure false"]
    else:
        address, tls = f"{central.host}:{central.port}", []
    lines = [
        f"connection {name}",
        f"address {address}",
        f"topic {topic} out 1",
        "cleansession false",
        f"remote_clientid bridge-{name}",
        f"local_clientid bridge-{name}-local",
        "bridge_protocol_version mqttv311",
        "try_private true",
        "keepalive_interval 5",
        "restart_timeout 1",
        "notifications true",
        *tls,
    ]
    with open(site.conf, "a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
