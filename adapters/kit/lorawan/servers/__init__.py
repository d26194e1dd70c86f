"""One parser per network server, each turning its JSON event into an :class:`~adapters.kit.lorawan.uplink.Uplink`.

Parsers are pure functions ``parse(doc, event, body) -> Uplink``: ``doc`` is the decoded JSON,
``event`` the event kind the transport learnt from the MQTT topic or the HTTP query (None when
unknown, then it is inferred from the fields present) and ``body`` the exact bytes, used only for
the fallback idempotency key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from adapters.kit.lorawan.uplink import Uplink

Parser = Callable[[Mapping[str, Any], "str | None", bytes], Uplink]
"""``parse(doc, event, body) -> Uplink``."""
