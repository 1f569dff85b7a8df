"""configdrive: nova-exact instance metadata on a local drive, for a fast first boot.

Render an instance's metadata into the tree nova writes (:func:`render`), lay it onto an
ISO9660/VFAT config drive or a NoCloud seed (:func:`build`), and read any drive back
(:func:`inspect`).
"""

from __future__ import annotations

__version__ = "0.1.0"

from configdrive.builder import BuildResult, build, inspect, render_for
from configdrive.drive import DriveContents, DriveFormat, Filesystem, read_drive, write_drive
from configdrive.errors import ConfigDriveError, DriveError, InvalidDrive, SpecError, ToolError
from configdrive.inspection import Inspection
from configdrive.model import (
    Device,
    DeviceBus,
    DeviceKind,
    InjectedFile,
    Instance,
    KeyPair,
    KeyType,
    Networking,
    Port,
    Route,
    Subnet,
)
from configdrive.render import Layout, RenderOptions, Tree, render
from configdrive.spec import Limits, instance_from_mapping, load_spec, sanitize_hostname

__all__ = [
    "BuildResult",
    "ConfigDriveError",
    "Device",
    "DeviceBus",
    "DeviceKind",
    "DriveContents",
    "DriveError",
    "DriveFormat",
    "Filesystem",
    "InjectedFile",
    "Inspection",
    "Instance",
    "InvalidDrive",
    "KeyPair",
    "KeyType",
    "Layout",
    "Limits",
    "Networking",
    "Port",
    "RenderOptions",
    "Route",
    "SpecError",
    "Subnet",
    "ToolError",
    "Tree",
    "__version__",
    "build",
    "inspect",
    "instance_from_mapping",
    "load_spec",
    "read_drive",
    "render",
    "render_for",
    "sanitize_hostname",
    "write_drive",
]
