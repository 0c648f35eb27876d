#!/usr/bin/env python3
"""Measures the observability tools (issue #16) the way a user meets them, on a local
testnet of the release binary:

- status page: a write made with `lattice doc set` on node 1 (timed from the CLI's start)
  until node 0's page receives it (its server-sent event naming the write's trace id),
  interleaved with the same write reaching node 0's `lattice doc watch` (the baseline);
- `/api/state` with many documents (one render of the page's data);
- `lattice testnet snapshot` wall time (CLI start to exit).

Usage: LATTICE=target/release/lattice python3 testnet/examples/observe-bench.py
"""
import json, os, socket, statistics, subprocess, sys, tempfile, threading, time

L = os.environ.get("LATTICE", "target/release/lattice")
ROUNDS = int(os.environ.get("ROUNDS", "20"))
DOCS = int(os.environ.get("DOCS", "1000"))
tn = tempfile.mkdtemp(prefix="observe-bench-")
env = dict(os.environ, LATTICE_TESTNET=tn)


def run(*args, check=True):
    r = subprocess.run([L, *args], env=env, capture_output=True, text=True)
    if check and r.returncode != 0:
        sys.exit(f"lattice {' '.join(args)}: {r.stderr}")
    return r.stdout


def exec_json(i, *args):
    return json.loads(run("testnet", "exec", str(i), "--", *args, "--json"))


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def sse_reader(url, events):
    host, rest = url[len("http://"):].split("/", 1)
    h, port = host.rsplit(":", 1)
    s = socket.create_connection((h, int(port)))
    path = "/events?" + rest.split("?", 1)[1]
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    buf = b""
    while True:
        chunk = s.recv(1 << 16)
        if not chunk:
            return
        buf += chunk
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            events.append((time.monotonic(), ev.decode(errors="replace")))


def watch_reader(proc, lines):
    for line in proc.stdout:
        lines.append((time.monotonic(), line))


try:
    run("testnet", "up", "-n", "2", "--", "--http", "127.0.0.1:0")
    url = exec_json(0, "status")["status_page"]
    doc = exec_json(0, "doc", "create", "bench", "--open")["doc"]
    exec_json(1, "doc", "join", doc)
    exec_json(1, "doc", "set", doc, "warm", "up")
    run("testnet", "wait-converged", doc, "--timeout", "60")
    events, lines = [], []
    threading.Thread(target=sse_reader, args=(url, events), daemon=True).start()
    watch = subprocess.Popen(
        [L, "--socket", os.path.join(tn, "node-0", "lattice.sock"), "doc", "watch", doc, "--json"],
        env=env, stdout=subprocess.PIPE, text=True)
    threading.Thread(target=watch_reader, args=(watch, lines), daemon=True).start()
    time.sleep(1)
    page, base = [], []
    for i in range(ROUNDS):
        key = f"k{i}"
        t0 = time.monotonic()
        w = exec_json(1, "doc", "set", doc, key, str(i))
        trace = w["trace"]
        deadline = time.monotonic() + 10
        got_page = got_watch = None
        while time.monotonic() < deadline and (got_page is None or got_watch is None):
            if got_page is None:
                got_page = next((t for t, e in list(events) if trace in e), None)
            if got_watch is None:
                got_watch = next((t for t, l in list(lines) if f'"{key}"' in l), None)
            time.sleep(0.005)
        if got_page is None or got_watch is None:
            sys.exit(f"round {i}: page {got_page}, watch {got_watch}")
        page.append((got_page - t0) * 1000)
        base.append((got_watch - t0) * 1000)
        time.sleep(0.3)
    watch.kill()
    print(f"write on node 1 (CLI start) -> node 0, {ROUNDS} rounds, ms:")
    for name, xs in (("status page event", page), ("doc watch (baseline)", base)):
        print(f"  {name:22} p50 {statistics.median(xs):7.1f}  p90 {pct(xs, 90):7.1f}  max {max(xs):7.1f}")

    for i in range(DOCS - 1):
        run("testnet", "exec", "0", "--", "doc", "create", f"d{i}")
    token = url.split("token=")[1]
    api = url.split("/?")[0] + "/api/state?token=" + token
    times = []
    for _ in range(20):
        out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{time_total} %{size_download}", api],
                             capture_output=True, text=True).stdout.split()
        times.append(float(out[0]) * 1000)
        size = int(out[1])
    print(f"/api/state with {DOCS} documents: p50 {statistics.median(times):.1f} ms, "
          f"max {max(times):.1f} ms, {size} bytes (200 documents listed)")

    snaps = []
    for _ in range(10):
        t0 = time.monotonic()
        run("testnet", "snapshot", doc)
        snaps.append((time.monotonic() - t0) * 1000)
    print(f"testnet snapshot (2 nodes, CLI start to exit): p50 {statistics.median(snaps):.1f} ms, "
          f"max {max(snaps):.1f} ms")
finally:
    run("testnet", "down", check=False)
