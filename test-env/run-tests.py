#!/usr/bin/env python3
"""Runs the crate's tests: the unit tests, then the integration tests module by module, in lanes.

The integration tests are one binary (`tests/main.rs`, a module per file of `tests/`). Each module
starts its own servers (an API server, a nats-server, the operator, a node) and some stop or
restart them, so each module runs in a process of its own: `<binary> --exact <its tests>`. They
spend most of their time waiting on servers (an API server coming up, a resync period, a
nats-server restarting), so three modules at a time fit on two cores (the whole suite passed
with three under a load of 15 from other builds; two is the cautious choice on a slower machine). A module's output is printed
as one block when it ends, with cargo's `Running` header and libtest's `test result:` summary.

    test-env/run-tests.py [ARGS FOR EVERY TEST PROCESS...]

Each lane starts the control plane (etcd and kube-apiserver) of its next module while the current
one runs: a module's `support::control_plane()` claims it (`JKO_PRESTARTED_CONTROLPLANE`) instead
of waiting 4-10 s for its own; a module that does not claim it (a node's modules start a control
plane with a node) leaves it to the next. `TEST_PRESTART=0` turns this off.

TEST_LANES (default 3) sets how many modules run at once. Durations of the last run are kept in
$JKO_CACHE/test-durations.json, and the longest modules start first. Exit status 1 when any
failed.

A run is counted, not only its exit statuses: it fails when fewer integration modules were built
than `tests/main.rs` lists (and never fewer than MIN_MODULES), when a binary's or module's
`test result:` line is missing or shows fewer passed than the tests it was given, or any ignored
(doc tests, which cannot be listed: any ignored),
and when a module runs longer than TEST_MODULE_TIMEOUT seconds (default 1200: killed with every
process it started). `test-env/test_run_tests.py` tests these rules with a fake test binary.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

# The fewest integration modules a run may have, whatever `tests/main.rs` says (26 when written):
# a `tests/main.rs` emptied by mistake must not make a run of nothing green.
MIN_MODULES = 24
MAIN_RS = "tests/main.rs"
RESULT = re.compile(r"^test result: \S+\. (\d+) passed; (\d+) failed; (\d+) ignored;", re.M)


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


def listed(path, args=()):
    """The names of the tests a binary lists, ignored ones included."""
    out = subprocess.run([path, "--list", "--format", "terse", *args], stdout=subprocess.PIPE,
                         check=True, text=True).stdout
    return [name for name, _, kind in (line.rpartition(": ") for line in out.splitlines())
            if kind == "test"]


def expected_modules(main_rs=MAIN_RS):
    """The integration modules `tests/main.rs` declares (`mod x;`, not `support`), as labels."""
    with open(main_rs) as f:
        names = re.findall(r"^mod (\w+);", f.read(), re.M)
    return sorted(f"tests/{n}.rs" if os.path.exists(f"tests/{n}.rs") else f"tests/{n}/mod.rs"
                  for n in names if n != "support")


def missing_modules(integration, main_rs=MAIN_RS):
    """Why the integration modules built are too few, or None."""
    built = {name for name, _, _ in integration} - {main_rs}
    try:
        expected = expected_modules(main_rs)
    except OSError as e:
        return f"cannot read {main_rs}: {e}"
    absent = [m for m in expected if m not in built]
    if absent:
        return f"{len(absent)} modules of {main_rs} have no test in the built binary: " + \
            ", ".join(absent)
    if len(built) < MIN_MODULES:
        return f"only {len(built)} integration test modules were built, fewer than {MIN_MODULES}"
    return None


def counted(output, expected):
    """Why a test process's output does not show `expected` tests passed (any number when
    None), or None."""
    results = RESULT.findall(output)
    if len(results) != 1:
        return f"{len(results)} `test result:` lines instead of 1"
    passed, failed, ignored = (int(n) for n in results[0])
    if ignored:
        return f"{ignored} tests ignored"
    if failed or (expected is not None and passed != expected):
        return f"{passed} passed of {expected} tests given"
    return None


def modules(path):
    """The integration binary's tests grouped by module (the file of `tests/` they are in)."""
    groups = {}
    for name in listed(path):
        module = name.split("::", 1)[0] if "::" in name else None
        if module is None:
            label = "tests/main.rs"
        elif os.path.exists(f"tests/{module}.rs"):
            label = f"tests/{module}.rs"
        else:
            label = f"tests/{module}/mod.rs"
        groups.setdefault(label, []).append(name)
    return [(label, path, names) for label, names in groups.items()]


class Prestarted:
    """A control plane started ahead of the module that will claim it: `controlplane --dir DIR
    --exit-on-stdin-eof` (JKO_CONTROLPLANE_BIN), which stops when this closes its stdin. The module
    claims it by creating DIR/claimed (tests/support/controlplane.rs), and it is stopped after
    that module; unclaimed, it waits for the lane's next module."""

    count = 0

    def __init__(self, binary, root):
        Prestarted.count += 1
        self.dir = os.path.join(root, f"prestarted-{os.getpid()}-{Prestarted.count}")
        os.makedirs(self.dir)
        with open(os.path.join(self.dir, "controlplane.log"), "w") as log:
            self.proc = subprocess.Popen([binary, "--dir", self.dir, "--exit-on-stdin-eof"],
                                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                         stderr=log, start_new_session=True)
        # Reaped as soon as it exits: a module that stops it waits until its pid is gone.
        threading.Thread(target=self.proc.wait, daemon=True).start()

    @staticmethod
    def start():
        """A new one, or None when turned off or the environment has no control plane binary."""
        binary = os.environ.get("JKO_CONTROLPLANE_BIN")
        if os.environ.get("TEST_PRESTART", "1") == "0" or not binary:
            return None
        target = os.environ.get("CARGO_TARGET_DIR", "target")
        return Prestarted(binary, os.path.join(target, "tmp", "controlplanes"))

    def env(self):
        return {"JKO_PRESTARTED_CONTROLPLANE": os.path.abspath(self.dir),
                "JKO_PRESTARTED_CONTROLPLANE_PID": str(self.proc.pid)}

    def claimed(self):
        return os.path.exists(os.path.join(self.dir, "claimed"))

    def stop(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def run(name, path, tests, args, timeout=None, env=None, watch=None):
    """Runs a binary (`tests`: the module's tests, or [] for all) in a session of its own, with
    `env` added to the environment and `watch(proc)` called in a thread of its own; kills the
    session after `timeout` seconds. Returns (exit status, output, seconds); the status is 1 when
    the output does not count every test given as passed."""
    started = time.monotonic()
    selection = ["--exact", *tests] if tests else []
    expected = len(tests) if tests else len(listed(path, args))
    proc = subprocess.Popen([path, *selection, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                            errors="replace", start_new_session=True,
                            env={**os.environ, **(env or {})})
    watcher = threading.Thread(target=watch, args=(proc,), daemon=True) if watch else None
    if watcher:
        watcher.start()
    try:
        output, _ = proc.communicate(timeout=timeout)
        why = counted(output, expected) if proc.returncode == 0 else None
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        try:
            output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # a process that left the session holds the pipe
            output = ""
            proc.wait()
        why = f"killed after {timeout:.0f}s (TEST_MODULE_TIMEOUT)"
    if watcher:
        watcher.join()
    code = proc.returncode
    if why:
        output += f"\n{name}: {why}\n"
        code = code or 1
    return code, output, time.monotonic() - started


def doc_tests():
    """`cargo test --doc`: (exit status, output)."""
    doc = subprocess.run(["cargo", "test", "--locked", "--doc"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, errors="replace")
    return doc.returncode, doc.stdout


def main():
    args = sys.argv[1:]
    lanes = max(1, int(os.environ.get("TEST_LANES", "3")))
    timeout = float(os.environ.get("TEST_MODULE_TIMEOUT", "1200"))
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
        report(name, path, *run(name, path, tests, args, timeout))
    too_few = missing_modules(integration)
    if too_few:
        print(f"FAILED: {too_few}", flush=True)
        results["integration modules"] = (1, 0.0)

    # Longest first (by the last run's figures; new modules first of all), so that the lanes
    # end together.
    queue = sorted(integration, key=lambda t: -known.get(t[0], 1e9))
    print(f"==> {len(queue)} integration test modules, {lanes} at a time", flush=True)

    def lane():
        ahead = Prestarted.start() if queue else None
        try:
            while True:
                with lock:
                    if not queue:
                        return
                    name, path, tests = queue.pop(0)
                    print(f"    started {name}", flush=True)
                given, following = ahead, []

                def watch(proc, given=given, following=following):
                    # Once the module has claimed its control plane, the next module's starts.
                    while given and proc.poll() is None:
                        if given.claimed():
                            with lock:
                                more = bool(queue)
                            if more:
                                following.append(Prestarted.start())
                            return
                        time.sleep(0.2)

                # --show-output: what a module's tests print (their figures, how long their
                # servers took) is in the log when they pass too.
                report(name, path, *run(name, path, tests, [*args, "--show-output"], timeout,
                                        env=given.env() if given else None, watch=watch))
                if given and (given.claimed() or given.proc.poll() is not None):
                    given.stop()
                    with lock:
                        more = bool(queue)
                    ahead = following[0] if following else Prestarted.start() if more else None
        finally:
            if ahead:
                ahead.stop()

    threads = [threading.Thread(target=lane) for _ in range(lanes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    started = time.monotonic()
    doc_code, doc_output = doc_tests()
    # Doc tests cannot be listed: any number may pass, none may be ignored.
    why = counted(doc_output, None) if doc_code == 0 else None
    if why:
        doc_output += f"\ndoc tests: {why}\n"
        doc_code = 1
    results["doc tests"] = (doc_code, 0.0)
    print("   Doc-tests", flush=True)
    print(doc_output.rstrip("\n"), flush=True)
    print(f"    (doc tests in {time.monotonic() - started:.0f}s)", flush=True)

    if durations_file:
        # Only what passed: a module that failed early (its node not started) would otherwise be
        # scheduled last next time, behind modules it outlasts by minutes.
        known.update({n: round(s, 1) for n, (code, s) in results.items() if s and code == 0})
        try:
            with open(durations_file + ".tmp", "w") as f:
                json.dump(known, f, indent=1, sort_keys=True)
            os.replace(durations_file + ".tmp", durations_file)
        except OSError:
            pass

    failed = sorted(n for n, (code, _) in results.items() if code != 0)
    if failed:
        print("FAILED: " + ", ".join(failed), flush=True)
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed (test binaries, integration "
          f"modules and doc tests; {len(integration)} integration modules built)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
