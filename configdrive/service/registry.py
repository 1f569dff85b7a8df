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
_REPLACE = "PUT /v1/instances/<uuid> replaces a registered instance"


class Conflict(ConfigDriveError):
    """The request clashes with what is registered (e.g. a fixed IP already taken)."""


def _refuse_file_references(data: Mapping[str, Any]) -> None:
    if "user_data_file" in data:
        raise SpecError("user_data_file", "file references are not accepted over the admin API")
    keys = data.get("keys")
    for i, key in enumerate(keys if isinstance(keys, list) else ()):  # others: the validator's
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

    def _load(self, change: Change) -> InstanceView | None:
        """The view of a stored row; None (logged) for a row this code cannot serve: one
        another version wrote, or one written before today's limits. It is skipped, never
        fatal: one bad row must not take every other instance down with it."""
        try:
            if change.imds not in IMDS_MODES:
                raise SpecError("imds", f"{change.imds!r} is not one of {', '.join(IMDS_MODES)}")
            instance = instance_from_mapping(json.loads(change.spec))
            return InstanceView(instance, imds=change.imds, generation=change.generation)
        except Exception as exc:  # noqa: BLE001 - any failure: skip the row, keep serving
            reason = str(exc) if isinstance(exc, ConfigDriveError) else type(exc).__name__
            log.error(
                "instance %s (generation %d) in the store cannot be served, skipped: %s",
                change.uuid,
                change.generation,
                reason,
            )
            return None

    def _apply(self, change: Change) -> None:
        old = self._by_uuid.get(change.uuid)
        if old is not None and old.generation >= change.generation:
            return
        view = None
        if not change.deleted:
            view = self._load(change)
            if view is None:
                return
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

    def register(
        self, data: Mapping[str, Any], imds: str = "optional", *, replace: bool = False
    ) -> InstanceView:
        """Validate, store and serve an instance. An instance with the same uuid is a
        :class:`Conflict` unless ``replace`` is given (the admin API's ``PUT``).

        Nothing is stored until the row is known to load and render the way every server
        will load it (the stored JSON text, parsed back); a failure at any point before the
        write leaves the store untouched, and nothing after it can fail the registration."""
        if imds not in IMDS_MODES:
            raise SpecError("imds", f"must be one of {', '.join(IMDS_MODES)}")
        instance, fixed = prepare_spec(data)
        text = json.dumps(fixed)
        stored = instance_from_mapping(json.loads(text))
        if stored != instance:
            raise SpecError("spec", "does not load back the same from the store's JSON")
        view = InstanceView(stored, imds=imds)  # a spec that cannot be served is never stored
        with self._write:
            for ip in _addresses(instance):
                holder = self._by_ip.get(ip)
                if holder is not None and holder.uuid != instance.uuid:
                    raise Conflict(f"fixed IP {ip} already belongs to instance {holder.uuid}")
            if not replace and instance.uuid in self._by_uuid:
                raise Conflict(f"instance {instance.uuid} is already registered", hint=_REPLACE)
        generation = self.store.put(instance.uuid, text, imds, create=not replace)
        if generation is None:  # another server registered it first
            raise Conflict(f"instance {instance.uuid} is already registered", hint=_REPLACE)
        with self._write:
            self._apply(Change(instance.uuid, text, imds, generation))
        try:
            self.refresh()
        except Exception as exc:  # noqa: BLE001 - stored already; the poller catches up
            log.error("refresh after registering %s failed: %s", instance.uuid, exc)
        return self._by_uuid.get(instance.uuid) or view

    def unregister(self, uuid: str) -> bool:
        found = self.store.delete(uuid) is not None
        self.refresh()
        return found
