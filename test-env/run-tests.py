#!/usr/bin/env python3
"""Runs the crate's tests: the unit tests, then the integration tests module by module, in lanes.

The integration tests are one binary (`tests/main.rs`, a module per file of `tests/`). Each module
starts its own servers (an API server, a nats-server, the operator, a node) and some stop or
restart them, so each module runs in a process of its own: `<binary> --exact <its tests>`. They
spend most of their time waiting on servers (an API server coming up, a resync period, a
nats-server restarting), so two modules at a time fit on two cores. A module's output is printed
as one block when it ends, with cargo's `Running` header and libtest's `test result:` summary.

    test-env/run-tests.py [ARGS FOR EVERY TEST PROCESS...]

TEST_LANES (default 2) sets how many modules run at once. Durations of the last run are kept in
$JKO_CACHE/test-durations.json, and the longest modules start first. Exit status 1 when any
failed.
"""

import json
import os
import subprocess
import sys
import threading
import time


def build():
    """Builds every test target; returns the unit test binaries [(name, path, [])] and the
    integration modules [(name, path, [their tests])]."""
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
        if "test" in target["kind"]:
            integration.extend(modules(msg["executable"]))
        else:
            units.append((f"unittests {os.path.relpath(target['src_path'])}", msg["executable"], []))
    return units, integration


def modules(path):
    """The integration binary's tests grouped by module (the file of `tests/` they are in)."""
    listed = subprocess.run([path, "--list", "--format", "terse"], stdout=subprocess.PIPE,
                            check=True, text=True).stdout
    groups = {}
    for line in listed.splitlines():
        name, _, kind = line.rpartition(": ")
        if kind != "test":
            continue
        module = name.split("::", 1)[0] if "::" in name else None
        if module is None:
            label = "tests/main.rs"
        elif os.path.exists(f"tests/{module}.rs"):
            label = f"tests/{module}.rs"
        else:
            label = f"tests/{module}/mod.rs"
        groups.setdefault(label, []).append(name)
    return [(label, path, names) for label, names in groups.items()]


def run(name, path, tests, args):
    started = time.monotonic()
    selection = ["--exact", *tests] if tests else []
    proc = subprocess.run([path, *selection, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
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

    started = time.monotonic()
    print("==> building the test binaries (cargo test --no-run)", flush=True)
    units, integration = build()
    print(f"    built in {time.monotonic() - started:.0f}s", flush=True)
    results = {}
    lock = threading.Lock()

    def report(name, path, code, output, seconds):
        with lock:
            results[name] = (code, seconds)
            print(f"     Running {name} ({path})", flush=True)
            print(output.rstrip("\n"), flush=True)
            print(f"    ({name}: {'ok' if code == 0 else 'FAILED'} in {seconds:.1f}s)\n", flush=True)

    # Unit tests first, alone: they are quick, and a failure there is the first thing to read.
    for name, path, tests in units:
        report(name, path, *run(name, path, tests, args))

    # Longest first (by the last run's figures; new modules first of all), so that the lanes
    # end together.
    queue = sorted(integration, key=lambda t: -known.get(t[0], 1e9))
    print(f"==> {len(queue)} integration test modules, {lanes} at a time", flush=True)

    def lane():
        while True:
            with lock:
                if not queue:
                    return
                name, path, tests = queue.pop(0)
                print(f"    started {name}", flush=True)
            report(name, path, *run(name, path, tests, args))

    threads = [threading.Thread(target=lane) for _ in range(lanes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    started = time.monotonic()
    doc = subprocess.run(["cargo", "test", "--locked", "--doc"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, errors="replace")
    results["doc tests"] = (doc.returncode, 0.0)
    print("   Doc-tests", flush=True)
    print(doc.stdout.rstrip("\n"), flush=True)
    print(f"    (doc tests in {time.monotonic() - started:.0f}s)", flush=True)

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
    print(f"all {len(results)} test binaries and modules passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
