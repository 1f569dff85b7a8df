#!/usr/bin/env python3
"""Benchmark: the metadata server (`configdrive serve`) against nginx serving the same bytes.

On loopback, in one run, interleaved (ours x1, ours xN, nginx x1, nginx auto, ours x1, …):

- **ours**: `configdrive serve --config FILE` as its own process tree (its own HTTP/1.1 on uvloop),
  direct mode, access log off, **per-instance rate limit and per-address connection cap
  off** (`rate: 0`, `max_connections_per_peer: 100000`), one instance registered with the
  fixed IP 127.0.0.1 so wrk's requests from 127.0.0.1 are that instance's. Twice: one
  process (`workers: 1`) and one worker per core (`workers: N`, SO_REUSEPORT).
- **nginx**: its own prefix and config, `daemon off`, access_log off, on a loopback port,
  serving as static files the bytes fetched from our server first. Once with
  `worker_processes 1` and once with `worker_processes auto` (one per core): each compares
  with ours at the same process count.

Paths: `/openstack/latest/meta_data.json` and the EC2 leaf `/latest/meta-data/instance-id`.
Load: `wrk -t2 -cC -dD --latency` at 64 and 256 connections; req/s, p50, p99, the ratio
ours / nginx at the same process count and whether the issue's targets are met (>= 0.35x
nginx's req/s, p99 < 10 ms at 256 connections). Then the 1,000-instance boot storm
(`crawl_many`: every guest crawls its whole tree at once from its own address) against each
of our two set-ups with the default rate limit.

Writes bench/results/service_http.json (or --output).
Usage: bench/service_http.py [--duration S] [--rounds N] [--connections 64,256] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from configdrive.benchmark import machine_info  # noqa: E402
from configdrive.service.registry import Registry  # noqa: E402
from configdrive.service.store import open_store  # noqa: E402
from configdrive.service.testing import (  # noqa: E402
    CRAWL_PATHS,
    crawl_many,
    guest_spec,
    http_request,
    serve_process,
    stop_process,
)

PATHS = ("/openstack/latest/meta_data.json", "/latest/meta-data/instance-id")
TARGET_RATIO = 0.35
TARGET_P99_MS = 10.0
TARGET_P99_CONNECTIONS = 256
# each of our set-ups against nginx with the same number of processes
PAIRS = {"ours": "nginx_1", "ours_workers": "nginx_auto"}
BENCH_INDEX = 1_000_000  # the wrk instance's spec index (uuid, mac): apart from the guests'

# wrk keeps its fast path (no request()/response() hooks); done() reports exact numbers
WRK_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,"mean_us":%.1f,' ..
    '"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,"max_us":%.0f,' ..
    '"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f}\\n',
    summary.requests, summary.duration, summary.bytes, latency.mean,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""

NGINX_CONF = """\
{user}worker_processes {workers};
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    types {{ application/json json; }}
    default_type text/plain;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {root};
        location / {{ try_files $uri =404; }}
    }}
}}
"""


def listening_socket() -> socket.socket:
    """A listener on a loopback port the kernel picks (port 0), for nginx to inherit: the
    port is never free between being picked and being served, and connections made before
    nginx accepts wait in its backlog."""
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(4096)
    except BaseException:
        sock.close()
        raise
    return sock


# --------------------------------------------------------------------------------------------
# the servers


def make_store(path: Path, guests: int) -> float:
    """Register the wrk instance (fixed IP 127.0.0.1) and ``guests`` storm guests."""
    registry = Registry(open_store(str(path)))
    began = time.perf_counter()
    try:
        bench = guest_spec(BENCH_INDEX, name="bench")
        bench["networks"][0]["subnets"][0]["ips"] = ["127.0.0.1"]
        registry.register(bench)
        for i in range(guests):
            registry.register(guest_spec(i))
    finally:
        registry.store.close()
    return time.perf_counter() - began


# wrk's connections all come from 127.0.0.1, the one registered instance: per-instance rate
# limit and per-address connection cap off, so the figure is the server's, not its limits'
UNCAPPED: dict[str, Any] = {"rate": 0, "max_connections_per_peer": 100_000}


@contextmanager
def ours(work: Path, store: Path, name: str, **settings: Any) -> Iterator[int]:
    """`configdrive serve --config FILE` as a subprocess; yields its port."""
    config = {"listen": ["127.0.0.1:0"], "admin_listen": None, "store": f"sqlite://{store}",
              "access_log": "off", **settings}  # fmt: skip
    with serve_process(work / f"{name}.json", config) as served:
        yield served.port


@contextmanager
def nginx(binary: str, work: Path, root: Path, workers: str) -> Iterator[int]:
    """nginx in the foreground with its own prefix and config; yields its port."""
    prefix = work / f"nginx-{workers}"
    (prefix / "tmp").mkdir(parents=True)
    # as root the workers drop to nobody: they must be able to read the docroot
    user = "user nobody nogroup;\n" if os.geteuid() == 0 else ""
    conf = prefix / "nginx.conf"
    for path in (work, prefix, prefix / "tmp"):
        path.chmod(0o755)
    argv = [binary, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)]
    # nginx cannot report a port 0 it bound: it inherits a listener bound here instead (its
    # NGINX="fd;" variable, as in its binary upgrade), matched to the listen directive
    with listening_socket() as listener:
        port = int(listener.getsockname()[1])
        conf.write_text(
            NGINX_CONF.format(user=user, workers=workers, prefix=prefix, port=port, root=root)
        )
        fd = listener.fileno()
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(fd,),
            env={**os.environ, "NGINX": f"{fd};"},
        )
    try:
        # answered once nginx accepts: the listener was there before it started
        status, _, _ = http_request(port, "/", timeout=15)
        if proc.poll() is not None or status not in (200, 403, 404):
            raise RuntimeError(f"nginx did not serve on 127.0.0.1:{port} (status {status})")
        yield port
    finally:
        stop_process(proc)


def copy_bytes(port: int, root: Path) -> dict[str, dict[str, Any]]:
    """Fetch each path from our server and write the body into nginx's docroot."""
    out = {}
    for path in PATHS:
        status, headers, body = http_request(port, path)
        if status != 200:
            raise RuntimeError(f"our server answered {status} for {path}")
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
        out[path] = {"bytes": len(body), "content_type": headers.get("content-type", "")}
    for dirpath, _dirs, filenames in os.walk(root):
        Path(dirpath).chmod(0o755)
        for f in filenames:
            (Path(dirpath) / f).chmod(0o644)
    return out


def check_same(port: int, path: str, expected: dict[str, Any]) -> dict[str, Any]:
    status, headers, body = http_request(port, path)
    if status != 200 or len(body) != expected["bytes"]:
        raise RuntimeError(f"port {port} {path}: {status}, {len(body)} bytes")
    return {"bytes": len(body), "content_type": headers.get("content-type", "")}


# --------------------------------------------------------------------------------------------
# other work on the machine: this host is shared, so every run records the CPU that processes
# outside this benchmark's tree used meanwhile (kernel threads excluded: loopback softirq work
# done on our behalf lands there)

TICK = os.sysconf("SC_CLK_TCK")


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, utime + stime ticks) for every live process except kernel threads."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        ppid, flags = int(fields[1]), int(fields[6])
        if flags & 0x00200000 or int(entry) == 2 or ppid == 2:  # PF_KTHREAD
            continue
        table[int(entry)] = (ppid, int(fields[11]) + int(fields[12]))
    return table


def _foreign_ticks() -> dict[int, int]:
    table = _proc_table()
    ours = {os.getpid()}
    grew = True
    while grew:
        grew = False
        for pid, (ppid, _) in table.items():
            if ppid in ours and pid not in ours:
                ours.add(pid)
                grew = True
    return {pid: ticks for pid, (_, ticks) in table.items() if pid not in ours}


class OtherLoad:
    """CPU (in cores) used by processes outside this benchmark between start() and stop()."""

    def __init__(self) -> None:
        self._began = time.monotonic()
        self._before = _foreign_ticks()

    def cores(self) -> float:
        after = _foreign_ticks()
        ticks = sum(t - self._before.get(pid, 0) for pid, t in after.items())
        return max(ticks, 0) / TICK / max(time.monotonic() - self._began, 1e-3)


def wait_quiet(limit: float, threshold: float = 0.1) -> float:
    """Wait (up to ``limit`` s) until other processes use < ``threshold`` cores over 5 s."""
    began = time.monotonic()
    while True:
        probe = OtherLoad()
        time.sleep(5)
        cores = probe.cores()
        if cores < threshold or time.monotonic() - began >= limit:
            return round(time.monotonic() - began, 1)
        print(f"  waiting for a quiet machine: other processes use {cores:.2f} cores",
              file=sys.stderr)  # fmt: skip


# --------------------------------------------------------------------------------------------
# wrk


def run_wrk(
    wrk: str, script: Path, port: int, path: str, connections: int, duration: float, threads: int
) -> dict[str, Any]:
    argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency",
            "-s", str(script), f"http://127.0.0.1:{port}{path}"]  # fmt: skip
    other = OtherLoad()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    other_cores = other.cores()
    lines = [x for x in proc.stdout.splitlines() if x.startswith("WRKJSON ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
    raw = json.loads(lines[-1].removeprefix("WRKJSON "))
    seconds = raw["duration_us"] / 1e6
    errors = sum(raw[k] for k in ("connect", "read", "write", "status", "timeout"))
    return {
        "rps": round(raw["requests"] / seconds, 1),
        "p50_ms": round(raw["p50_us"] / 1000, 3),
        "p90_ms": round(raw["p90_us"] / 1000, 3),
        "p99_ms": round(raw["p99_us"] / 1000, 3),
        "max_ms": round(raw["max_us"] / 1000, 3),
        "mean_ms": round(raw["mean_us"] / 1000, 3),
        "requests": int(raw["requests"]),
        "seconds": round(seconds, 3),
        "errors": int(errors),
        "error_detail": {k: int(raw[k]) for k in ("connect", "read", "write", "status", "timeout")},
        "other_cores": round(other_cores, 3),
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each figure over the rounds (rounds are interleaved across the servers)."""
    return {
        "rps": round(statistics.median(r["rps"] for r in runs), 1),
        "p50_ms": round(statistics.median(r["p50_ms"] for r in runs), 3),
        "p99_ms": round(statistics.median(r["p99_ms"] for r in runs), 3),
        "errors": sum(r["errors"] for r in runs),
        "rounds": len(runs),
        "max_other_cores": max(r["other_cores"] for r in runs),
    }


# --------------------------------------------------------------------------------------------


def tool_version(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    text = (proc.stdout + proc.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def dpkg_version(package: str) -> str | None:
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    return proc.stdout.strip()


def raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, need), hard))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--connections", default="64,256", help="comma-separated (64,256)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--guests", type=int, default=1000, help="boot-storm guests (1000)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 s, 16 connections, 1 round, 50 guests")  # fmt: skip
    parser.add_argument(
        "-o", "--output", type=Path, default=ROOT / "bench/results/service_http.json"
    )
    parser.add_argument("--wait-quiet", type=float, default=900, metavar="S",
                        help="wait up to S s for other processes to go idle (900)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.rounds, args.connections, args.guests = 1.0, 1, "16", 50
        args.wait_quiet = 0
    conns = [int(c) for c in args.connections.split(",")]

    wrk = shutil.which("wrk")
    nginx_bin = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                          else None)  # fmt: skip
    if wrk is None or nginx_bin is None:
        print("error: wrk and nginx are needed (hint: scripts/setup --system)", file=sys.stderr)
        return 2
    import aiohttp

    try:
        import uvloop

        loop_name = f"uvloop {getattr(uvloop, '__version__', '?')}"
    except ImportError:
        loop_name = "asyncio"
    raise_nofile(8 * max(args.guests, 512))

    waited = wait_quiet(args.wait_quiet) if args.wait_quiet > 0 else 0.0
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    work = Path(tempfile.mkdtemp(prefix="cd_http_"))
    try:
        store = work / "md.db"
        registered = make_store(store, args.guests)
        script = work / "report.lua"
        script.write_text(WRK_LUA)
        root = work / "www"
        root.mkdir()
        auto = "auto"
        cores = os.cpu_count() or 1
        labels = {
            "ours": "configdrive serve, workers 1 (one process, rate limit off)",
            "ours_workers": f"configdrive serve, workers {cores} (one per core, SO_REUSEPORT, "
            "rate limit off)",
            "nginx_1": "nginx, worker_processes 1 (same process count as ours)",
            "nginx_auto": f"nginx, worker_processes auto ({cores} here; same count as "
            "ours_workers)",
        }
        raw: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {
            p: {str(c): {k: [] for k in labels} for c in conns} for p in PATHS
        }
        responses: dict[str, dict[str, Any]] = {}
        with (
            ours(work, store, "bench", **UNCAPPED) as our_port,
            ours(work, store, "bench-workers", workers=cores, **UNCAPPED) as workers_port,
        ):
            served = copy_bytes(our_port, root)
            with nginx(nginx_bin, work, root, "1") as n1, nginx(nginx_bin, work, root, auto) as na:
                ports = {"ours": our_port, "ours_workers": workers_port, "nginx_1": n1,
                         "nginx_auto": na}  # fmt: skip
                for path in PATHS:
                    responses[path] = {k: check_same(p, path, served[path])
                                       for k, p in ports.items()}  # fmt: skip
                for path in PATHS:  # warm-up
                    for port in ports.values():
                        run_wrk(wrk, script, port, path, conns[0], 1, args.threads)
                for rnd in range(args.rounds):
                    for c in conns:
                        for path in PATHS:
                            for key, port in ports.items():
                                res = run_wrk(
                                    wrk, script, port, path, c, args.duration, args.threads
                                )
                                raw[path][str(c)][key].append(res)
                                print(
                                    f"  round {rnd + 1}/{args.rounds} c={c:<4} {key:<12} "
                                    f"{path:<34} {res['rps']:>9.0f} req/s  "
                                    f"p50 {res['p50_ms']:.2f} ms  p99 {res['p99_ms']:.2f} ms"
                                    + (f"  errors {res['errors']}" if res["errors"] else "")
                                    + f"  (other processes {res['other_cores']:.2f} cores)",
                                    file=sys.stderr,
                                )

        # the boot storm: an operator's default settings (rate limit on: 50/s, burst 300)
        storms = {}
        for key, workers in (("ours", 1), ("ours_workers", cores)):
            with ours(work, store, f"storm-{key}", workers=workers) as storm_port:
                if http_request(storm_port, "/healthz")[0] != 200:
                    raise RuntimeError("storm server not healthy")
                storm_other = OtherLoad()
                storm = asyncio.run(asyncio.wait_for(crawl_many(storm_port, args.guests), 120))
                storms[key] = {
                    "workers": workers,
                    "guests": storm.guests,
                    "requests_per_guest": len(CRAWL_PATHS),
                    "requests": storm.requests,
                    "errors": len(storm.errors),
                    "first_errors": storm.errors[:5],
                    "seconds": round(storm.seconds, 3),
                    "req_per_s": round(storm.rate, 1),
                    "other_cores": round(storm_other.cores(), 3),
                }
    finally:
        shutil.rmtree(work, ignore_errors=True)

    results: dict[str, Any] = {}
    targets: dict[str, Any] = {}
    for path in PATHS:
        results[path] = {}
        for c in conns:
            cell: dict[str, Any] = {k: summarise(v) for k, v in raw[path][str(c)].items()}
            met = {}
            for mine, theirs in PAIRS.items():
                for k in ("nginx_1", "nginx_auto"):
                    cell[f"ratio_{mine}_over_{k}"] = round(cell[mine]["rps"] / cell[k]["rps"], 3)
                met[f"{mine}_throughput_vs_{theirs}_met"] = (
                    cell[f"ratio_{mine}_over_{theirs}"] >= TARGET_RATIO
                )
                if c == TARGET_P99_CONNECTIONS:
                    met[f"{mine}_p99_under_10ms_met"] = cell[mine]["p99_ms"] < TARGET_P99_MS
            results[path][str(c)] = cell
            targets[f"{path} c={c}"] = met
    report = {
        "benchmark": "metadata service vs nginx on loopback (wrk), and the boot storm",
        "machine": machine_info(),
        "versions": {
            "wrk": tool_version([wrk, "-v"]),
            "nginx": tool_version([nginx_bin, "-v"]),
            "nginx_package": dpkg_version("nginx-light") or dpkg_version("nginx"),
            "aiohttp": aiohttp.__version__ + " (admin API only)",
            "http": "configdrive.service.http (its own HTTP/1.1)",
            "event_loop": loop_name,
            "python": platform.python_version(),
        },
        "setup": {
            "wrk": f"wrk -t{args.threads} -c<C> -d{args.duration:g}s --latency (+ a Lua done() "
            "hook for exact percentiles)",
            "connections": conns,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "order": "interleaved: per round, per connections, per path: ours, ours_workers, "
            "nginx_1, nginx_auto; figures are the median over rounds",
            "pairs": PAIRS,
            "servers": labels,
            "ours": "configdrive serve --config FILE (subprocess), direct mode, access_log off, "
            "rate 0 and max_connections_per_peer 100000 (limits OFF for the throughput runs); "
            "the wrk instance is "
            f"registered with fixed IP 127.0.0.1; workers 1 (ours) and {cores} (ours_workers)",
            "nginx": "own prefix/conf, daemon off, access_log off, sendfile on, "
            "keepalive_requests 10000000, static files holding the bytes our server served",
            "meta_data_json": "our server renders a fresh random_seed into every "
            "meta_data.json (as nova does); nginx serves one fixed copy of the same size",
            "instances_in_store": args.guests + 1,
            "waited_for_quiet_s": waited,
            "other_load": "other_cores: CPU cores used by processes outside this benchmark "
            "(not kernel threads) during each run; > 0.1 means the run shared the machine",
            "loadavg_before": load_before,
            "loadavg_after": Path("/proc/loadavg").read_text().split()[:3],
        },
        "responses": responses,
        "max_other_cores": max(
            r["other_cores"]
            for p in raw.values()
            for c in p.values()
            for v in c.values()
            for r in v
        ),
        "results": results,
        "runs": raw,
        "targets": {
            "throughput_ratio_min": TARGET_RATIO,
            "throughput_compared_with": "nginx with the same process count (pairs)",
            "p99_ms_max_at_256": TARGET_P99_MS,
            "met": targets,
        },
        "boot_storm": {
            "server": "configdrive serve, default rate limit (rate 50/s, burst 300 per worker), "
            "access_log off; crawlers in the benchmark process (one asyncio loop)",
            "registration_s": round(registered, 2),
            **storms,
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print_table(report, conns)
    return 0


def print_table(report: dict[str, Any], conns: list[int]) -> None:
    print(f"metadata service vs nginx, loopback, wrk, median of {report['setup']['rounds']} "
          f"round(s) of {report['setup']['duration_s']:g} s")  # fmt: skip
    print(f"{'path':<34} {'conns':>5} {'server':<13} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7}")
    for path, by_conn in report["results"].items():
        for c in conns:
            cell = by_conn[str(c)]
            for key in report["setup"]["servers"]:
                r = cell[key]
                err = f"  errors {r['errors']}" if r["errors"] else ""
                print(f"{path:<34} {c:>5} {key:<13} {r['rps']:>9.0f} {r['p50_ms']:>7.2f} "
                      f"{r['p99_ms']:>7.2f}{err}")  # fmt: skip
            print(f"{'':<34} {'':>5} " + ", ".join(
                f"{mine}/{theirs} {cell[f'ratio_{mine}_over_{theirs}']:.3f}x"
                for mine, theirs in PAIRS.items()))  # fmt: skip
    print(f"targets: ours >= {TARGET_RATIO}x nginx req/s (same process count); p99 < "
          f"{TARGET_P99_MS:g} ms at {TARGET_P99_CONNECTIONS} connections")  # fmt: skip
    for name, met in report["targets"]["met"].items():
        print(f"  {name}: " + ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in met.items()))
    if report["max_other_cores"] > 0.1:
        print(f"WARNING: other processes used up to {report['max_other_cores']:.2f} cores during "
              "a run: the numbers are disturbed (see other_cores in the JSON)")  # fmt: skip
    for key in PAIRS:
        s = report["boot_storm"][key]
        print(f"boot storm ({key}, workers {s['workers']}): {s['guests']} guests x "
              f"{s['requests_per_guest']} requests = {s['requests']} in {s['seconds']:.2f} s "
              f"({s['req_per_s']:.0f} req/s), {s['errors']} errors")  # fmt: skip
    print("(rate limit off for the wrk runs; default 50/s burst 300 for the storm)")


if __name__ == "__main__":
    sys.exit(main())
