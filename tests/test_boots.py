"""The every-boot table (configdrive.lifecycle.boots) against each supported cloud-init's own
code and Debian's cloud.cfg: the modules whose frequency is ``always`` in their code, or
overridden in the stage lists, in the order cloud.cfg runs them (issue 13)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import yaml

from configdrive.lifecycle.boots import SETTINGS, every_boot

# runs under the cloud-init version's own PYTHONPATH
PROBE = r"""
import importlib, json, logging, pkgutil
logging.disable(logging.CRITICAL)
import cloudinit.config as cc
out = {}
for m in pkgutil.iter_modules(cc.__path__):
    if m.name.startswith("cc_"):
        mod = importlib.import_module("cloudinit.config." + m.name)
        meta = getattr(mod, "meta", None) or {}
        out[m.name[3:]] = meta.get("frequency") or getattr(mod, "frequency", None)
print(json.dumps(out))
"""
STAGES = {"init": "cloud_init_modules", "config": "cloud_config_modules",
          "final": "cloud_final_modules"}  # fmt: skip


def test_every_boot_modules_match_cloud_init(cloudinit: Any) -> None:
    env = {**os.environ, "PYTHONPATH": str(cloudinit.dist_packages), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True
    )
    frequency = json.loads(done.stdout)
    cfg = yaml.safe_load((cloudinit.root / "etc/cloud/cloud.cfg").read_text())
    entry = every_boot(cloudinit.version)
    for stage, key in STAGES.items():
        always = []
        for item in cfg.get(key) or []:
            name, override = (item, None) if isinstance(item, str) else (item[0], item[1:2])
            name = name.replace("-", "_")
            if ((override or [None])[0] or frequency[name]) == "always":
                always.append(name)
        assert tuple(always) == getattr(entry, stage), (stage, always)
    assert set(entry.modules) <= set(SETTINGS)  # each is explained to the operator
