"""The cloud-image benchmark: its modes, its reading of cloud-init's log, its arithmetic and its
CLI's bad input (fast); and a two-boot ``bench boot --os debian-12 --quick`` through real
haproxy (vm)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from configdrive.cloudbench import cloud_modes, metadata_wait, parse_modes, summarize_cloud
from configdrive.errors import ConfigDriveError
from configdrive.guest import tune
from configdrive.guest.cloudimage import (
    CloudOS,
    CloudVariant,
    build_cloud_image,
    cloud_recipe,
    noagent_changes,
    variant_name,
)

ROOT = Path(__file__).resolve().parent.parent


def test_every_mode_the_issue_names_and_one_per_fast_step() -> None:
    modes = cloud_modes()
    assert list(modes)[:5] == ["stock", "stock-service", "stock-service-loaded", "datasource",
                               "fast"]  # fmt: skip
    assert [m for m in modes if m.startswith("fast-minus-")] == [
        f"fast-minus-{s}" for s in tune.FAST_PROFILE
    ]
    assert list(modes)[-1] == "noagent"
    assert not modes["stock-service"].drive and modes["stock-service"].service
    assert modes["stock"].drive and not modes["stock"].service
    assert not modes["noagent"].applies and not modes["noagent"].drive
    # the loaded path is slower at every hop the healthy one has
    healthy, loaded = modes["stock-service"].hops, modes["stock-service-loaded"].hops
    assert healthy and loaded
    assert all(h.latency < lo.latency for h, lo in zip(healthy, loaded, strict=True))
    assert "haproxy" not in {h.kind for h in healthy}  # the real haproxy is in front instead


def test_parse_modes() -> None:
    assert [m.name for m in parse_modes("fast, stock")] == ["fast", "stock"]
    assert len(parse_modes("all")) == len(cloud_modes())
    for bad, message in (("", "at least one"), ("fast,fast", "once"),
                         ("fast-minus-nothing", "'fast-minus-nothing' is not a mode")):  # fmt: skip
        with pytest.raises(ConfigDriveError, match=message):
            parse_modes(bad)


LOG_22_4 = """\
2026-12-03 09:08:31,178 - util.py[DEBUG]: Cloud-init v. 22.4.2 running 'init-local' at Thu, \
03 Dec 2026 09:08:29 +0000. Up 66.72 seconds.
2026-12-03 09:08:31,192 - main.py[DEBUG]: No kernel command line url found.
2026-12-03 09:08:36,440 - handlers.py[DEBUG]: finish: init-local/search-ConfigDrive: SUCCESS
2026-12-03 09:08:36,456 - main.py[INFO]: [local] found local data from DataSourceConfigDrive
2026-12-03 09:08:57,618 - util.py[DEBUG]: Cloud-init v. 22.4.2 running 'init' at Thu, \
03 Dec 2026 09:08:57 +0000. Up 94.21 seconds.
"""


def test_metadata_wait_reads_cloud_inits_log() -> None:
    assert metadata_wait(LOG_22_4) == (5.278, "DataSourceConfigDrive")
    # the fallback is not metadata; a network datasource found in the init stage counts
    fallback = LOG_22_4.replace("[local] found local data from DataSourceConfigDrive",
                                "[local] found local data from DataSourceNone")  # fmt: skip
    assert metadata_wait(fallback) == (None, None)
    network = fallback + (
        "2026-12-03 09:09:01,000 - main.py[INFO]: [net] found network data from "
        "DataSourceOpenStack\n"
    )
    assert metadata_wait(network) == (29.822, "DataSourceOpenStack")
    assert metadata_wait("") == (None, None)


def _boot(mode: str, run: int, ssh: float, done: float | None, wait: float | None = 0.2) -> Any:
    return {"mode": mode, "run": run, "time_to_ssh_s": ssh, "time_to_cloud_init_done_s": done,
            "metadata_wait_s": wait, "stages": {"init-local": 10.0, "finished": ssh - 5},
            "user_data_applied": mode != "noagent", "hostname_applied": mode != "noagent"}  # fmt: skip


def test_summary_ratios_savings_and_targets() -> None:
    boots = []
    for run, scale in ((1, 1.0), (2, 1.2)):
        boots += [
            _boot("stock", run, 100 * scale, 130 * scale),
            _boot("fast", run, 60 * scale, 70 * scale, wait=0.25),
            _boot("fast-minus-ssh-keys", run, 85 * scale, 95 * scale),
            _boot("noagent", run, 50 * scale, None, wait=None),
        ]
    summary = summarize_cloud(boots)
    fast = summary["modes"]["fast"]
    assert fast["time_to_ssh_s"] == {"median": 66.0, "min": 60.0, "max": 72.0, "n": 2}
    assert summary["modes"]["noagent"]["time_to_cloud_init_done_s"] is None
    assert summary["modes"]["fast"]["applied"] and not summary["modes"]["noagent"]["applied"]
    # ratios pair the boots of one run
    assert summary["ratios"]["fast_over_stock"]["time_to_ssh_s"]["median"] == 0.6
    assert summary["ratios"]["fast_over_noagent"]["time_to_ssh_s"]["median"] == 1.2
    saving = summary["step_savings"]["ssh-keys"]["time_to_ssh_s"]
    assert saving == {"median": 27.5, "min": 25.0, "max": 30.0, "n": 2}
    targets = summary["targets"]
    assert targets["fast_over_stock"] == {"target": 0.5, "median": 0.6, "met": False}
    assert targets["fast_over_noagent"]["met"] is False
    assert targets["drive_metadata_wait_s"] == {"target": 0.3, "median": 0.25, "met": True}


def test_docs_table_is_made_from_the_results(tmp_path: Any) -> None:
    boots = [_boot("stock", 1, 100, 130), _boot("fast", 1, 60, 70, wait=0.25),
             _boot("fast-minus-ssh-keys", 1, 85, 95), _boot("noagent", 1, 50, None, None)]  # fmt: skip
    doc = {"os": "debian-12", "firmware": "bios", "machine": "pc", "accelerator": "tcg",
           "runs": 1, "date": "2026-12-03", "summary": summarize_cloud(boots)}  # fmt: skip
    results = tmp_path / "results.json"
    results.write_text(json.dumps(doc))
    proc = subprocess.run([sys.executable, "bench/cloud_table.py", str(results)],
                          capture_output=True, text=True, check=True, cwd=ROOT)  # fmt: skip
    assert "| `fast` | 60 | 70 | 0.25 | 0.60× |" in proc.stdout
    assert "| `noagent` | 50 | – | – | 0.50× |" in proc.stdout
    assert "| fast_over_stock ≤ 0.5 | 0.6 | **missed** |" in proc.stdout
    assert "| `ssh-keys` | 25.0 | 25.0 |" in proc.stdout


def test_noagent_recipe_holds_no_key_and_the_variants_are_named() -> None:
    recipe = cloud_recipe(CloudOS.DEBIAN_12, CloudVariant.NOAGENT)
    text = repr(recipe)
    assert "PRIVATE KEY" not in text and "ssh-ed25519 " not in text  # drawn at build time
    assert recipe == cloud_recipe(CloudOS.DEBIAN_12, CloudVariant.NOAGENT)  # a stable key
    paths = {c["path"] for c in recipe["noagent"]}
    assert {"/etc/cloud/cloud-init.disabled", "/root/.ssh/authorized_keys",
            "/etc/ssh/ssh_host_ed25519_key"} <= paths  # fmt: skip
    modes = {c.path: c.mode for c in noagent_changes({"/etc/ssh/ssh_host_rsa_key": "k",
                                                      "/etc/ssh/ssh_host_rsa_key.pub": "p"})}  # fmt: skip
    assert modes["/etc/ssh/ssh_host_rsa_key"] == 0o600
    assert modes["/etc/ssh/ssh_host_rsa_key.pub"] == 0o644
    assert variant_name(CloudVariant.FAST, ("ssh-keys",)) == "fast-minus-ssh-keys"
    minus = cloud_recipe(CloudOS.DEBIAN_12, CloudVariant.FAST, ("ssh-keys",))
    assert "99_configdrive-ssh-keys.cfg" not in repr(minus["tune_changes"])
    assert "99_configdrive-grub-dpkg.cfg" in repr(minus["tune_changes"])


def test_only_the_fast_variant_skips_known_steps(tmp_path: Any) -> None:
    with pytest.raises(ConfigDriveError, match="only the fast variant"):
        build_cloud_image(CloudOS.DEBIAN_12, CloudVariant.STOCK, tmp_path, skip=("ssh-keys",))
    with pytest.raises(ConfigDriveError, match="'nope' is not a step"):
        build_cloud_image(CloudOS.DEBIAN_12, CloudVariant.FAST, tmp_path, skip=("nope",))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--os", "debian-12", "--modes", "fast,bogus"], "error: modes: 'bogus' is not a mode"),
        (["--os", "debian-13", "--boot", "kernel"], "error: os: the kernel-boot test image is"),
        (["--os", "debian-12", "--runs", "0"], "error: runs: must be at least 1"),
    ],
)
def test_bench_boot_cli_bad_input(tmp_path: Any, args: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "configdrive", "bench", "boot", *args, "-o", str(tmp_path / "o")],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(message)
    assert not (tmp_path / "o").exists()


@pytest.mark.vm
def test_bench_boot_quick_on_the_cloud_image_through_real_haproxy(
    cloud_image: Any, tmp_path: Any
) -> None:
    """Two real boots of Debian 12's cloud image: the stock image reading its metadata through
    real haproxy (neutron's template) and the chain, and the no-agent floor."""
    cloud_image("debian-12")
    cloud_image("debian-12", "noagent")
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, "-m", "configdrive", "bench", "boot", "--os", "debian-12", "--boot",
         "bios", "--modes", "stock-service,noagent", "--quick", "-o", str(out)],
        capture_output=True, text=True, check=False, timeout=2400,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    assert doc["runs"] == 1 and doc["accelerator"] in ("tcg", "kvm")
    assert doc["service_path"]["haproxy"].startswith("HAProxy version")
    service, floor = doc["boots"]
    assert (service["mode"], floor["mode"]) == ("stock-service", "noagent")
    # the stock image found the OpenStack datasource on 169.254.169.254 through the chain,
    # applied the user data and the hostname, and the agent counted its requests
    assert service["datasource"].startswith("DataSourceOpenStack"), service
    assert service["user_data_applied"] and service["hostname_applied"]
    assert service["metadata_requests"] > 5
    assert service["time_to_cloud_init_done_s"] >= service["time_to_ssh_s"] > 0
    # the floor logs in as root with its build-time key; cloud-init never ran
    assert floor["time_to_ssh_s"] > 0 and floor["time_to_cloud_init_done_s"] is None
    assert floor["datasource"] is None and not floor["user_data_applied"]
    assert floor["stages"] == {}, floor["stages"]
    summary = doc["summary"]
    assert summary["modes"]["stock-service"]["time_to_ssh_s"]["n"] == 1
    for png in ("boot-stages.png",):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "step-savings.png").exists()  # no fast-minus mode was run
    assert "target fast_over_noagent" in proc.stdout
