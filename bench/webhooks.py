#!/usr/bin/env python3
"""What webhooks cost, and how fast they arrive: the release service with receivers on loopback.

Two measurements, loopback only, each load bounded in time:

* delivery latency: books created at a steady rate (one client, `--rate` per second) with one
  subscription; for each delivery, the time from the change's commit (`at`, the transaction's
  timestamp, a little before the commit) to its arrival at the receiver: p50, p99, max;
* the cost on writes: POST /api/v1/books under wrk (`--connections`) with no subscription, then
  with `--subscriptions` (100) active subscriptions to fast receivers, on the same instance; the
  ratio of the two throughputs (the issue's bound: at least 0.8), with how many deliveries were
  made meanwhile and how far the subscriptions were behind when the load ended.

For the latency the receiver is an asyncio server in this process; for the cost it is the Rust
example receiver (`crates/http/examples/webhook_receiver.rs`, one thread, 204 at once), so that
what is measured is the service's and the database's work rather than a Python receiver's: it
still shares the two cores, and the CPU each part used is printed. Prerequisites: cargo, the
PostgreSQL server programs, wrk.
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import BINARY, ROOT, free_port, lua, need, percentile, wait_ready, wrk  # noqa: E402


class Receivers:
    """An HTTP/1.1 server on loopback that answers every request 204 at once and records, for
    each, the arrival time and the body's `seq` and `at`."""

    def __init__(self):
        self.port = free_port()
        self.arrivals = []  # (arrival wall-clock seconds, path, seq, at)
        self.count = 0
        self.loop = asyncio.new_event_loop()
        self.record = False
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait()

    def _run(self, ready):
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", self.port, backlog=1024))
        ready.set()
        self.loop.run_until_complete(server.serve_forever())

    async def _serve(self, reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                length = 0
                for line in lines[1:]:
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                body = await reader.readexactly(length)
                arrived = time.time()
                self.count += 1
                if self.record:
                    change = json.loads(body)
                    self.arrivals.append((arrived, path, change["seq"], change["at"]))
                writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionResetError):
            pass
        finally:
            writer.close()


def cpu_seconds(match):
    """CPU seconds (user + system) used so far by the processes whose command name `match` says."""
    total = 0
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        if match(int(entry.name), name):
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def call(base, key, method, path, body=None):
    request = urllib.request.Request(f"{base}{path}", method=method, headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        data=json.dumps(body).encode() if body is not None else None)
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read()
        return json.loads(text) if text else None


def at_seconds(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="length of each load")
    parser.add_argument("--rate", type=int, default=50, help="creates per second for the latency")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections for the cost")
    parser.add_argument("--subscriptions", type=int, default=100)
    parser.add_argument("--skip-build", action="store_true", help="use the release binary as it is")
    args = parser.parse_args()
    need("cargo", "wrk")
    if not args.skip_build:
        subprocess.run(["cargo", "build", "--release", "--locked"], cwd=ROOT, check=True)
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "books-http", "--example", "webhook_receiver"],
                       cwd=ROOT, check=True)
    work = Path(tempfile.mkdtemp(prefix="books-webhooks-bench-"))
    os.chmod(work, 0o755)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, DATA_DIR=str(work / "postgres"), BIND=f"127.0.0.1:{port}",
               RATE_LIMIT="1000000", WEBHOOKS_ALLOW_PRIVATE="true")
    env.pop("DATABASE_URL", None)
    stdout = open(work / "stdout", "w+")
    service = subprocess.Popen([str(BINARY)], env=env, stdout=stdout, stderr=open(work / "stderr", "w"))
    receivers = Receivers()
    hook = f"http://127.0.0.1:{receivers.port}"
    try:
        wait_ready(base, service)
        stdout.seek(0)
        key = stdout.read().strip().splitlines()[-1]

        # 1. Latency under a steady write load, one subscription.
        first = call(base, key, "POST", "/api/v1/webhooks", {"url": f"{hook}/latency"})
        receivers.record = True
        end = time.monotonic() + args.seconds
        sent = 0
        while time.monotonic() < end:
            call(base, key, "POST", "/api/v1/books", {"title": f"Steady {sent}", "author": "bench"})
            sent += 1
            time.sleep(max(0.0, 1 / args.rate - 0.001))
        deadline = time.monotonic() + 30
        while len(receivers.arrivals) < sent and time.monotonic() < deadline:
            time.sleep(0.05)
        latencies = sorted((arrived - at_seconds(at)) * 1000 for arrived, _, _, at in receivers.arrivals)
        seqs = [seq for _, _, seq, _ in receivers.arrivals]
        in_order = all(a < b for a, b in zip(seqs, seqs[1:]))
        print(f"latency, commit to receiver, {sent} creates at {sent / args.seconds:.0f}/s, one subscription:")
        print(f"  delivered {len(latencies)}, in order: {in_order}; "
              f"p50 {percentile(latencies, 50):.1f} ms, p99 {percentile(latencies, 99):.1f} ms, "
              f"max {latencies[-1]:.1f} ms")
        call(base, key, "DELETE", f"/api/v1/webhooks/{first['id']}")
        receivers.record = False

        # 2. The cost on writes: POST throughput without, then with, active subscriptions.
        script = lua(key, "POST", '"/api/v1/books"', {"title": "Benchmark", "author": "wrk", "genre": "Load"})
        receiver_port = free_port()
        receiver = subprocess.Popen([str(BINARY.parent / "examples" / "webhook_receiver"), str(receiver_port)],
                                    stdout=subprocess.DEVNULL)
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{receiver_port}/count", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        def received():
            with urllib.request.urlopen(f"http://127.0.0.1:{receiver_port}/count", timeout=5) as response:
                return int(response.read())
        parts = {
            "service": lambda pid, name: pid == service.pid,
            "PostgreSQL": lambda pid, name: name.startswith("postgres"),
            "receiver": lambda pid, name: pid == receiver.pid,
        }
        def cpu():
            return {label: cpu_seconds(match) for label, match in parts.items()}
        def spent(before):
            after = cpu()
            return ", ".join(f"{label} {after[label] - before[label]:.1f} s" for label in parts)
        before = cpu()
        without = wrk(base, args.connections, args.seconds, work, script)
        cpu_without = spent(before)
        # The bench's own key may hold 20 subscriptions: more keys for the rest.
        keys = [key]
        for n in range(1, (args.subscriptions + 19) // 20):
            created = subprocess.run([str(BINARY), "keys", "create", "--name", f"bench-{n}"], env=env,
                                     capture_output=True, text=True, check=True)
            keys.append(created.stdout.strip().splitlines()[-1])
        for n in range(args.subscriptions):
            call(base, keys[n // 20], "POST", "/api/v1/webhooks", {"url": f"http://127.0.0.1:{receiver_port}/s{n}"})
        time.sleep(1)
        delivered_before = received()
        before = cpu()
        with_hooks = wrk(base, args.connections, args.seconds, work, script)
        cpu_with = spent(before)
        delivered = received() - delivered_before
        receiver.terminate()
        behind = []
        for k in keys:
            for s in call(base, k, "GET", "/api/v1/webhooks")["items"]:
                behind.append(s["delivered_through"])
        newest = call(base, key, "GET", "/api/v1/books/changes?after=0&limit=1")
        ratio = with_hooks["rps"] / without["rps"]
        print(f"POST /api/v1/books at {args.connections} connections, {args.seconds} s each:")
        print(f"  without subscriptions: {without['rps']:,.0f}/s (p50 {without['p50']:.2f} ms, p99 {without['p99']:.2f} ms, "
              f"non-2xx {without['non2xx']})")
        print(f"  with {args.subscriptions} active subscriptions: {with_hooks['rps']:,.0f}/s (p50 {with_hooks['p50']:.2f} ms, "
              f"p99 {with_hooks['p99']:.2f} ms, non-2xx {with_hooks['non2xx']}); "
              f"{delivered:,} deliveries meanwhile ({delivered / args.seconds:,.0f}/s)")
        print(f"  CPU without: {cpu_without}; with: {cpu_with}")
        print(f"  ratio {ratio:.2f} (target ≥ 0.80: {'met' if ratio >= 0.8 else 'NOT met'}); "
              f"subscriptions at seq {min(behind)}–{max(behind)} when the load ended")
        del newest
    finally:
        service.terminate()
        service.wait(timeout=30)


if __name__ == "__main__":
    main()
