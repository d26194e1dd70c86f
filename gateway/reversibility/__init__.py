"""Reversibility: export a territory (entities, history, subscriptions, configuration) and import it back.

``jonction export`` writes a *bundle*: a directory or a ``.tar``/``.tar.gz`` archive of NDJSON
files with a ``manifest.json`` (counts per tenant and type, time range, SHA-256 and line count of
every file, versions). ``jonction import`` verifies a bundle against its manifest, then writes it
into an embedded store or a broker, resumably and idempotently. ``jonction check --target`` reads
a bundle as a conformance target (L1 on its entities, counts against the manifest).
"""

from __future__ import annotations

from typing import Final

FORMAT: Final = "jonction-export"
"""The ``format`` member of every manifest."""
FORMAT_VERSION: Final = 1
"""Bumped when a reader of the previous version could misread a bundle."""
