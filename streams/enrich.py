"""The enrich stage: fill in what the pipeline can know better than the producer.

Called once per valid event, after validation and before detection, by every
runner. It mutates the event record in place and never fails on a valid event.
"""

from __future__ import annotations

from typing import Any

from mcpsift.canonical import definition_hash
from mcpsift.events import to_builtins
from mcpsift.uris import normalize_resource

__all__ = ["Enricher"]


class Enricher:
    """Normalise resource URIs, derive ``server.resource`` from configured names (and
    ``server.name`` from configured resources),
    apply the default tenant, compute missing tool ``definition_hash`` values."""

    def __init__(self, default_tenant: str = "default", servers: dict[str, str] | None = None):
        self.default_tenant = default_tenant
        self.servers = {name: normalize_resource(uri) for name, uri in (servers or {}).items()}
        # the reverse too, so a producer that only sends the resource names the
        # same server as one that only sends the name
        self.names = {uri: name for name, uri in self.servers.items()}

    def __call__(self, ev: Any) -> Any:
        if ev.tenant == "default" and self.default_tenant != "default":
            ev.tenant = self.default_tenant
        server = ev.server
        if server is not None:
            if server.resource:
                server.resource = normalize_resource(server.resource)
                if not server.name and server.resource in self.names:
                    server.name = self.names[server.resource]
            elif server.name and server.name in self.servers:
                server.resource = self.servers[server.name]
        if ev.tools is not None:
            for tool in ev.tools:
                if tool.definition_hash is None:
                    tool.definition_hash = definition_hash(to_builtins(tool))
        return ev
