#!/bin/sh
# configdrive-check: report what cloud-init did at first boot, on the serial console.
#
# Installed by configdrive.image as /usr/local/sbin/configdrive-check and run by
# configdrive-check.service after cloud-final.service. Every line goes to /dev/ttyS0 (the
# console the host logs) and to /var/log/configdrive-check.log, prefixed "CONFIGDRIVE-CHECK ":
#
#   begin | <key>=<value> | file <path> <base64 of its content, or MISSING>
#         | wrote <octal mode, or -> <base64 of its content, or MISSING> <path> | end
#
# "file" lines: the config drive's injected files (meta_data "files"); "wrote" lines: the
# files cloud-init's cloud-config (user, vendor, vendor2 data) told write_files to write.
#
# net_* are `ip -o` listings (links, addresses, routes) once the boot has finished;
# cloud_network is the network config cloud-init rendered, network_events its log lines
# saying where that config came from (a datasource, or its DHCP fallback).
#
# Values named *_b64 are base64 (no line breaks). configdrive.image.parse_check_report reads
# this format: keep it. Kernel cmdline "configdrive.poweroff=1": power off when done.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH LC_ALL=C.UTF-8 SYSTEMD_PAGER= SYSTEMD_COLORS=0
TTY=/dev/ttyS0
LOG=/var/log/configdrive-check.log

: >"$LOG"
say() {
    printf 'CONFIGDRIVE-CHECK %s\n' "$1" >>"$LOG"
    printf 'CONFIGDRIVE-CHECK %s\n' "$1" 2>/dev/null >"$TTY" || true
}
b64() {  # base64 of stdin, one line
    base64 -w0
}
b64file() {
    if [ -r "$1" ]; then b64 <"$1"; fi
}
uptime_now() {
    cut -d' ' -f1 /proc/uptime
}

say begin
# uptime and wall clock read together: they map cloud-init's log stamps onto the boot
read -r up _ </proc/uptime
say "uptime=$up"
say "epoch=$(date +%s.%N)"
say "hostname=$(hostname 2>/dev/null)"
say "fqdn=$(timeout 10 hostname -f 2>/dev/null)"
say "dmi_product=$(cat /sys/class/dmi/id/product_name 2>/dev/null)"

# What cloud-init saw and did, read from its own files with the guest's python3.
python3 - <<'PYTHON' 2>>"$LOG" | while IFS= read -r line; do say "$line"; done
import base64
import json
import pwd


def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def b64(data):
    return base64.b64encode(data).decode("ascii")


def merged_config():
    try:
        from cloudinit import util

        return util.mergemanydict(
            [util.read_conf_with_confd("/etc/cloud/cloud.cfg"), util.get_builtin_cfg()]
        )
    except Exception:
        return {}


def one_line(value):
    return " ".join(str(value).split())


status = (load("/run/cloud-init/status.json") or {}).get("v1") or {}
print("datasource=" + one_line(status.get("datasource") or ""))
result = (load("/run/cloud-init/result.json") or {}).get("v1") or {}
print("cloud_init_result=" + json.dumps(result.get("errors")))

config = merged_config()
dslist = None
try:
    import yaml

    with open("/run/cloud-init/cloud.cfg", encoding="utf-8") as f:  # written by ds-identify
        dslist = (yaml.safe_load(f) or {}).get("datasource_list")
except Exception:
    pass
if dslist is None:
    dslist = config.get("datasource_list")
print("datasource_list=" + json.dumps(dslist))


def keys_of(home):
    try:
        with open(home + "/.ssh/authorized_keys", "rb") as f:
            return b64(f.read())
    except OSError:
        return ""


print("authorized_keys_b64=" + keys_of("/root"))
try:
    user = config["system_info"]["default_user"]["name"]
except (KeyError, TypeError):
    user = "debian"
try:
    home = pwd.getpwnam(user).pw_dir
except (KeyError, TypeError):
    home = None
print("user_authorized_keys_b64=" + (keys_of(home) if home else ""))

instance = load("/run/cloud-init/instance-data-sensitive.json") or {}
meta_data = (instance.get("ds") or {}).get("meta_data") or {}
files = meta_data.get("files") if isinstance(meta_data, dict) else None
if isinstance(files, dict):
    paths = list(files)
elif isinstance(files, list):
    paths = [f.get("path") for f in files if isinstance(f, dict)]
else:
    paths = []
for path in paths:
    if not isinstance(path, str) or not path.strip("/") or "\n" in path:
        continue
    path = "/" + path.lstrip("/")  # ConfigDrive writes relative paths under /
    try:
        with open(path, "rb") as f:
            content = b64(f.read())
    except OSError:
        content = "MISSING"
    print(f"file {path} {content}")
meta = meta_data.get("meta") if isinstance(meta_data, dict) else None
print("meta_b64=" + b64(json.dumps(meta, sort_keys=True).encode()))
PYTHON

# write_files: each file cloud-init's processed cloud-config names, as it is on disk now (how a
# NoCloud seed carries injected files: as vendor-data write_files)
python3 - <<'PYTHON' 2>>"$LOG" | while IFS= read -r line; do say "$line"; done
import base64
import os

import yaml

for name in ("cloud-config.txt", "vendor-cloud-config.txt", "vendor2-cloud-config.txt"):
    try:
        with open("/var/lib/cloud/instance/" + name, encoding="utf-8") as f:
            config = yaml.safe_load(f)
    except (OSError, ValueError, yaml.YAMLError):
        continue
    entries = config.get("write_files") if isinstance(config, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        path = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(path, str) or not path or "\n" in path:
            continue
        try:
            with open(path, "rb") as f:
                mode = f"{os.fstat(f.fileno()).st_mode & 0o7777:04o}"
                content = base64.b64encode(f.read()).decode("ascii")
        except OSError:
            mode, content = "-", "MISSING"
        print(f"wrote {mode} {content} {path}")
PYTHON

say "runcmd_b64=$(b64file /var/tmp/runcmd.out)"
say "cloud_cfg_d_b64=$(for f in /etc/cloud/cloud.cfg.d/*.cfg; do printf '# %s\n' "${f##*/}"; cat "$f"; done | b64)"
say "cloud_init_events_b64=$(grep -E "running '(init-local|init|modules:config|modules:final)'|Searching for (local|network) data source|Seeing if we can get any data from|Running command \\['mount'|Reading from /run/cloud-init/tmp/[^ ]*(meta_data\\.json|meta-data)|found (local|network) data from|finished at" /var/log/cloud-init.log 2>/dev/null | b64)"
say "pollinate=$(systemctl show -p ActiveState,Result,UnitFileState pollinate.service 2>/dev/null | paste -sd, -)"
started=$(systemctl show -p ExecMainStartTimestampMonotonic --value pollinate.service 2>/dev/null)
case "$started" in
    '' | 0) say "pollinate_ran=no" ;;
    *) say "pollinate_ran=yes" ;;
esac

# systemd-analyze refuses while start jobs are queued: wait for the boot to finish.
say "system_state=$(timeout 600 systemctl is-system-running --wait 2>/dev/null)"
say "uptime_finished=$(uptime_now)"
# The network as the guest has it once booted, and what cloud-init wrote and chose for it
say "net_links_b64=$(ip -o link show 2>/dev/null | b64)"
say "net_addr_b64=$(ip -o addr show 2>/dev/null | b64)"
say "net_route_b64=$( { ip -o -4 route show; ip -o -6 route show; } 2>/dev/null | b64)"
say "cloud_network_b64=$(for f in /etc/network/interfaces.d/50-cloud-init /etc/netplan/50-cloud-init.yaml /etc/systemd/network/10-cloud-init-*.network; do if [ -r "$f" ]; then printf '# %s\n' "$f"; cat "$f"; fi; done | b64)"
say "network_events_b64=$(grep -E 'Applying network configuration from|network config is disabled|Renaming|rename' /var/log/cloud-init.log 2>/dev/null | b64)"
say "time_b64=$(systemd-analyze time 2>&1 | b64)"
say "blame_b64=$(systemd-analyze blame --no-pager 2>&1 | head -n 30 | b64)"
say "critical_chain_b64=$(systemd-analyze critical-chain --no-pager 2>&1 | b64)"
say "cloud_init_analyze_b64=$(cloud-init analyze show 2>/dev/null | b64)"
say "failed_units=$(systemctl list-units --failed --plain --no-legend 2>/dev/null | cut -d' ' -f1 | paste -sd, -)"
say end

case " $(cat /proc/cmdline) " in
    *" configdrive.poweroff=1 "*) systemctl --no-block poweroff ;;
esac
exit 0
