"""Registered instances in memory: by uuid and by fixed IP, rebuilt from the store's changes.

Specs arrive through the admin API as JSON mappings and are validated by the same function
as the CLI's spec files (:func:`configdrive.spec.instance_from_mapping`). Before they are
stored, everything the validator would otherwise draw at random (uuid, project id, port and
network ids) is written back into the mapping, so every server that loads the row builds the
identical instance. File references (``user_data_file``, ``public_key_file``, ``source``) are
refused: the admin API must not read the server's own files.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
from collections.abc import Mapping
from typing import Any

from configdrive.errors import ConfigDriveError, SpecError
from configdrive.model import Instance
from configdrive.service.store import Change, Store
from configdrive.service.views import InstanceView
from configdrive.spec import instance_from_mapping

__all__ = ["IMDS_MODES", "Conflict", "Registry", "prepare_spec"]

log = logging.getLogger("configdrive.service")

IMDS_MODES = ("optional", "required")


class Conflict(ConfigDriveError):
    """The request clashes with what is registered (e.g. a fixed IP already taken)."""


def _refuse_file_references(data: Mapping[str, Any]) -> None:
    if "user_data_file" in data:
        raise SpecError("user_data_file", "file references are not accepted over the admin API")
    for i, key in enumerate(data.get("keys") or ()):
        if isinstance(key, Mapping) and "public_key_file" in key:
            raise SpecError(f"keys[{i}].public_key_file", "file references are not accepted")
    files = data.get("files")
    items: list[tuple[str, Any]] = []
    if isinstance(files, Mapping):
        items = [(str(k), v) for k, v in files.items()]
    elif isinstance(files, list):
        items = [(str(i), v) for i, v in enumerate(files)]
    for name, value in items:
        if isinstance(value, str) or (isinstance(value, Mapping) and "source" in value):
            raise SpecError(
                f"files[{name}]",
                "file references are not accepted over the admin API",
                hint="give content or content_base64",
            )


def prepare_spec(data: Mapping[str, Any]) -> tuple[Instance, dict[str, Any]]:
    """Validate an admin-API spec; return the instance and the deterministic mapping to store."""
    if not isinstance(data, Mapping):
        raise SpecError("spec", "must be a JSON object")
    _refuse_file_references(data)
    instance = instance_from_mapping(data)
    fixed = dict(data)
    fixed["uuid"] = instance.uuid
    fixed["project_id"] = instance.project_id
    if instance.ports:
        networks = []
        for entry, port in zip(fixed["networks"], instance.ports, strict=True):
            networks.append({**entry, "id": port.id, "network_id": port.network_id})
        fixed["networks"] = networks
    return instance, fixed


def _addresses(instance: Instance) -> list[str]:
    return [ipaddress.ip_address(ip).compressed for ip in instance.fixed_ips]


class Registry:
    """The instances one server serves, kept in step with a :class:`Store`.

    Lookups are lock-free dict reads; updates build the new view first, then swap it in.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.generation = 0
        self.refreshes = 0  # completed refresh() calls: the store poller makes one per poll
        self._by_uuid: dict[str, InstanceView] = {}
        self._by_ip: dict[str, InstanceView] = {}
        self._write = threading.Lock()

    # -- lookups ---------------------------------------------------------------------------

    def by_ip(self, address: str) -> InstanceView | None:
        view = self._by_ip.get(address)
        if view is None and address.startswith("::ffff:"):
            view = self._by_ip.get(address[7:])  # IPv4-mapped IPv6 peer
        return view

    def by_uuid(self, uuid: str) -> InstanceView | None:
        return self._by_uuid.get(uuid)

    def __len__(self) -> int:
        return len(self._by_uuid)

    def uuids(self) -> list[str]:
        return sorted(self._by_uuid)

    # -- updates ---------------------------------------------------------------------------

    def _apply(self, change: Change) -> None:
        old = self._by_uuid.get(change.uuid)
        if old is not None and old.generation >= change.generation:
            return
        if change.deleted:
            view = None
        else:
            try:
                instance = instance_from_mapping(json.loads(change.spec))
            except (SpecError, ValueError) as exc:  # a row another version wrote; skip it
                log.error("instance %s in the store is invalid: %s", change.uuid, exc)
                return
            view = InstanceView(instance, imds=change.imds, generation=change.generation)
        if old is not None:
            self._by_uuid.pop(change.uuid, None)
            for ip in _addresses(old.instance):
                if self._by_ip.get(ip) is old:
                    del self._by_ip[ip]
        if view is not None:
            self._by_uuid[change.uuid] = view
            for ip in _addresses(view.instance):
                self._by_ip[ip] = view

    def refresh(self) -> int:
        """Apply the store's changes since the last refresh; return how many were applied."""
        with self._write:
            changes = self.store.changes(self.generation)
            for change in changes:
                self._apply(change)
                self.generation = max(self.generation, change.generation)
            self.refreshes += 1
            return len(changes)

    def register(self, data: Mapping[str, Any], imds: str = "optional") -> InstanceView:
        """Validate, store and serve an instance (replacing one with the same uuid)."""
        if imds not in IMDS_MODES:
            raise SpecError("imds", f"must be one of {', '.join(IMDS_MODES)}")
        instance, fixed = prepare_spec(data)
        with self._write:
            for ip in _addresses(instance):
                holder = self._by_ip.get(ip)
                if holder is not None and holder.uuid != instance.uuid:
                    raise Conflict(f"fixed IP {ip} already belongs to instance {holder.uuid}")
        # render before storing: a spec that cannot be served is never accepted
        InstanceView(instance, imds=imds)
        self.store.put(instance.uuid, json.dumps(fixed), imds)
        self.refresh()
        view = self._by_uuid.get(instance.uuid)
        assert view is not None
        return view

    def unregister(self, uuid: str) -> bool:
        found = self.store.delete(uuid) is not None
        self.refresh()
        return found
