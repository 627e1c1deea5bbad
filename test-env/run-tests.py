#!/usr/bin/env python3
"""Runs the crate's test binaries, the integration binaries in parallel lanes.

The integration tests spend most of their time waiting on servers (an API server coming up, a
resync period, a nats-server restarting), so two binaries at a time fit on two cores. Each
binary starts its own servers, so binaries do not share state. A binary's output is printed as
one block when it ends, with cargo's own `Running` header and `test result:` summary lines.

    test-env/run-tests.py [ARGS FOR EVERY TEST BINARY...]

TEST_LANES (default 2) sets how many binaries run at once. Durations of the last run are kept in
$JKO_CACHE/test-durations.json, and the longest binaries start first. Exit status 1 when any
binary failed.
"""

import json
import os
import subprocess
import sys
import threading
import time


def build():
    """Builds every test target; returns [(name, path)], unit tests first."""
    cmd = ["cargo", "test", "--locked", "--no-run", "--message-format=json-render-diagnostics"]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, check=True, text=True).stdout
    units, integration = [], []
    for line in out.splitlines():
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
            continue
        if not msg.get("profile", {}).get("test"):
            continue
        target = msg["target"]
        src = os.path.relpath(target["src_path"])
        if "test" in target["kind"]:
            integration.append((f"tests/{target['name']}.rs", msg["executable"]))
        else:
            units.append((f"unittests {src}", msg["executable"]))
    return units, integration


def run(name, path, args):
    started = time.monotonic()
    proc = subprocess.run([path, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL, text=True, errors="replace")
    return proc.returncode, proc.stdout, time.monotonic() - started


def main():
    args = sys.argv[1:]
    lanes = max(1, int(os.environ.get("TEST_LANES", "2")))
    cache = os.environ.get("JKO_CACHE")
    durations_file = os.path.join(cache, "test-durations.json") if cache else None
    try:
        with open(durations_file) as f:
            known = json.load(f)
    except (TypeError, OSError, ValueError):
        known = {}

    units, integration = build()
    results = {}
    lock = threading.Lock()

    def report(name, path, code, output, seconds):
        with lock:
            results[name] = (code, seconds)
            print(f"     Running {name} ({path})", flush=True)
            print(output.rstrip("\n"), flush=True)
            print(f"    ({name}: {'ok' if code == 0 else 'FAILED'} in {seconds:.1f}s)\n", flush=True)

    # Unit tests first, alone: they are quick, and a failure there is the first thing to read.
    for name, path in units:
        report(name, path, *run(name, path, args))

    # Longest first (by the last run's figures; new binaries first of all), so that the lanes
    # end together.
    queue = sorted(integration, key=lambda t: -known.get(t[0], 1e9))
    print(f"==> {len(queue)} integration test binaries, {lanes} at a time", flush=True)

    def lane():
        while True:
            with lock:
                if not queue:
                    return
                name, path = queue.pop(0)
                print(f"    started {name}", flush=True)
            report(name, path, *run(name, path, args))

    threads = [threading.Thread(target=lane) for _ in range(lanes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    doc = subprocess.run(["cargo", "test", "--locked", "--doc"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, errors="replace")
    results["doc tests"] = (doc.returncode, 0.0)
    print("   Doc-tests", flush=True)
    print(doc.stdout.rstrip("\n"), flush=True)

    if durations_file:
        known.update({n: round(s, 1) for n, (_, s) in results.items() if s})
        try:
            with open(durations_file + ".tmp", "w") as f:
                json.dump(known, f, indent=1, sort_keys=True)
            os.replace(durations_file + ".tmp", durations_file)
        except OSError:
            pass

    failed = sorted(n for n, (code, _) in results.items() if code != 0)
    if failed:
        print("FAILED: " + ", ".join(failed), flush=True)
        return 1
    print(f"all {len(results)} test binaries passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
