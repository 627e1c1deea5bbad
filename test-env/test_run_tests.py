#!/usr/bin/env python3
"""Tests of test-env/run-tests.py's bookkeeping, with fake test binaries (no cargo, no servers):
a run is red when modules are missing, when a module's tests are ignored or fewer passed than were
given, and when a module hangs. `test-env/test.sh` runs these first.

    python3 test-env/test_run_tests.py
"""

import importlib.util
import os
import stat
import sys
import tempfile
import textwrap
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("run_tests", os.path.join(HERE, "run-tests.py"))
runner = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runner)


def fake_binary(folder, tests, passed=None, ignored=0, code=0, hang=False):
    """A program that answers like a libtest binary: `--list --format terse` lists `tests`; a run
    prints libtest's summary with `passed` (default: as many as the tests asked for, or all) and
    `ignored`, and exits `code`; or (hang) starts a child, prints its pid and sleeps."""
    path = os.path.join(folder, f"fake-{len(os.listdir(folder))}")
    listing = "".join(f"{t}: test\\n" for t in tests)
    with open(path, "w") as f:
        f.write(textwrap.dedent(f"""\
            #!/bin/sh
            case " $* " in *" --list "*) printf '{listing}'; exit 0;; esac
            if {'true' if hang else 'false'}; then sleep 300 & echo $!; sleep 300; fi
            asked=0
            for a in "$@"; do case $a in -*) ;; *) asked=$((asked + 1));; esac; done
            [ $asked -gt 0 ] || asked={len(tests)}
            passed={'$asked' if passed is None else passed}
            echo "test result: ok. $passed passed; 0 failed; {ignored} ignored; 0 measured; 0 filtered out; finished in 0.01s"
            exit {code}
            """))
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return path


class Counted(unittest.TestCase):
    def test_every_test_given_passed_is_green(self):
        out = "test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 9 filtered out; x\n"
        self.assertIsNone(runner.counted(out, 3))

    def test_ignored_tests_are_red(self):
        out = "test result: ok. 1 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; x\n"
        self.assertIn("2 tests ignored", runner.counted(out, 3))

    def test_fewer_passed_than_given_is_red(self):
        out = "test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; x\n"
        self.assertIn("2 passed of 3", runner.counted(out, 3))

    def test_no_summary_line_is_red(self):
        self.assertIn("0 `test result:` lines", runner.counted("running 3 tests\n", 3))


class Run(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)

    def test_a_module_whose_tests_are_all_ignored_fails(self):
        fake = fake_binary(self.dir.name, ["a::one", "a::two"], passed=0, ignored=2)
        code, output, _ = runner.run("tests/a.rs", fake, ["a::one", "a::two"], [])
        self.assertNotEqual(code, 0, output)
        self.assertIn("2 tests ignored", output)

    def test_a_module_that_passes_fewer_than_listed_fails(self):
        fake = fake_binary(self.dir.name, ["a::one", "a::two"], passed=1)
        code, output, _ = runner.run("tests/a.rs", fake, ["a::one", "a::two"], [])
        self.assertNotEqual(code, 0, output)

    def test_a_unit_binary_is_counted_against_its_own_list(self):
        fake = fake_binary(self.dir.name, ["x", "y", "z"], passed=2)
        code, _, _ = runner.run("unittests", fake, [], [])
        self.assertNotEqual(code, 0)
        # Positive control: the same binary passing all three is green.
        fake = fake_binary(self.dir.name, ["x", "y", "z"])
        code, output, _ = runner.run("unittests", fake, [], [])
        self.assertEqual(code, 0, output)

    def test_a_module_that_hangs_is_killed_with_its_children_and_fails(self):
        fake = fake_binary(self.dir.name, ["a::one"], hang=True)
        started = time.monotonic()
        code, output, _ = runner.run("tests/a.rs", fake, ["a::one"], [], timeout=2)
        self.assertLess(time.monotonic() - started, 30)
        self.assertNotEqual(code, 0, output)
        self.assertIn("killed after 2s", output)
        child = int(output.split()[0])
        time.sleep(0.2)
        try:
            with open(f"/proc/{child}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            state = "gone"
        self.assertIn(state, ("gone", "Z"), "the module's child outlived the kill")


class Harness(unittest.TestCase):
    """main() with cargo replaced: build() returns fake binaries, doc tests pass."""

    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)
        self.cwd = os.getcwd()
        os.chdir(self.dir.name)
        self.addCleanup(os.chdir, self.cwd)
        os.mkdir("tests")
        self.names = [f"m{i}" for i in range(runner.MIN_MODULES)]
        self.bin = os.path.join(self.dir.name, "bin")
        os.mkdir(self.bin)
        for n in self.names:
            open(f"tests/{n}.rs", "w").close()
        self.write_main(self.names)
        self.saved = runner.build, runner.doc_tests, sys.argv
        self.addCleanup(self.restore)
        runner.doc_tests = lambda: (0, "test result: ok. 0 passed; 0 failed; 0 ignored;")
        sys.argv = ["run-tests.py"]
        os.environ.pop("JKO_CACHE", None)
        # No control plane is started ahead (Prestarted below has its own tests).
        saved_env = {k: os.environ.pop(k, None) for k in ("JKO_CONTROLPLANE_BIN", "TEST_LANES")}
        self.addCleanup(lambda: [os.environ.__setitem__(k, v) for k, v in saved_env.items() if v])

    def restore(self):
        runner.build, runner.doc_tests, sys.argv = self.saved

    def write_main(self, names):
        with open("tests/main.rs", "w") as f:
            f.write("mod support;\n\n" + "".join(f"mod {n};\n" for n in names))

    def modules(self, names, **fake):
        return [(f"tests/{n}.rs", fake_binary(self.bin, [f"{n}::t"], **fake), [f"{n}::t"])
                for n in names]

    def main(self, units, integration):
        runner.build = lambda: (units, integration)
        out = os.path.join(self.dir.name, "out")
        saved = os.dup(1)
        with open(out, "w") as f:
            os.dup2(f.fileno(), 1)
            try:
                code = runner.main()
                sys.stdout.flush()
            finally:
                os.dup2(saved, 1)
                os.close(saved)
        with open(out) as f:
            return code, f.read().rstrip("\n").splitlines()


class Main(Harness):
    def test_every_module_built_and_passed_is_green(self):
        code, lines = self.main([], self.modules(self.names))
        self.assertEqual(code, 0, lines)
        self.assertRegex(lines[-1], rf"^{len(self.names) + 1} passed, 0 failed ")

    def test_no_integration_module_built_is_red(self):
        code, lines = self.main([], [])
        self.assertEqual(code, 1, lines)
        self.assertRegex(lines[-1], r"^\d+ passed, 1 failed ")
        self.assertIn("have no test in the built binary", "\n".join(lines))

    def test_a_module_of_main_rs_not_built_is_red(self):
        code, lines = self.main([], self.modules(self.names[1:]))
        self.assertEqual(code, 1, lines)
        self.assertIn(f"tests/{self.names[0]}.rs", "\n".join(lines))

    def test_fewer_modules_than_the_floor_is_red_even_if_main_rs_lists_fewer(self):
        self.write_main(self.names[:3])
        code, lines = self.main([], self.modules(self.names[:3]))
        self.assertEqual(code, 1, lines)
        self.assertIn(f"fewer than {runner.MIN_MODULES}", "\n".join(lines))

    def test_an_ignored_doc_test_is_red(self):
        runner.doc_tests = lambda: (0, "test result: ok. 1 passed; 0 failed; 1 ignored;")
        code, lines = self.main([], self.modules(self.names))
        self.assertEqual(code, 1, lines)
        self.assertIn("FAILED: doc tests", lines)

    def test_an_ignored_module_is_red_and_named(self):
        integration = self.modules(self.names[1:])
        integration += self.modules(self.names[:1], passed=0, ignored=1)
        code, lines = self.main([], integration)
        self.assertEqual(code, 1, lines)
        self.assertIn(f"FAILED: tests/{self.names[0]}.rs", lines)
        self.assertRegex(lines[-1], rf"^{len(self.names)} passed, 1 failed ")


class Prestart(Harness):
    """Control planes started ahead: a fake `controlplane` (ready after 0.1 s, stops when its
    stdin closes) and fake modules that claim it as tests/support/controlplane.rs does, or not
    (a node's modules)."""

    def setUp(self):
        super().setUp()
        self.seen = os.path.join(self.dir.name, "seen")
        os.mkdir(self.seen)
        fake_cp = os.path.join(self.bin, "controlplane")
        with open(fake_cp, "w") as f:
            f.write(textwrap.dedent(f"""\
                #!/bin/sh
                dir=$2
                echo $$ > "$dir/pid"
                (sleep 0.1; echo '{{}}' > "$dir/ready.json") &
                cat > /dev/null
                echo stopped > "$dir/stopped"
                """))
        os.chmod(fake_cp, 0o755)
        os.environ["JKO_CONTROLPLANE_BIN"] = fake_cp
        os.environ["TEST_LANES"] = "2"
        self.addCleanup(os.environ.pop, "TEST_LANES", None)
        self.addCleanup(os.environ.pop, "JKO_CONTROLPLANE_BIN", None)
        os.environ["CARGO_TARGET_DIR"] = os.path.join(self.dir.name, "target")
        self.addCleanup(os.environ.pop, "CARGO_TARGET_DIR", None)
        # Eight modules of a second each, not the floor's 24.
        saved_floor = runner.MIN_MODULES
        runner.MIN_MODULES = 8
        self.addCleanup(setattr, runner, "MIN_MODULES", saved_floor)
        self.names = self.names[:8]
        self.write_main(self.names)

    def module(self, name, claims):
        """A module that records the control plane it was given (and claims it when `claims`,
        after waiting for it to be ready), then takes 1 s."""
        path = os.path.join(self.bin, name)
        claim = textwrap.dedent(f"""\
            [ -f "$JKO_PRESTARTED_CONTROLPLANE/ready.json" ] || touch {self.seen}/{name}.waited
            while [ ! -f "$JKO_PRESTARTED_CONTROLPLANE/ready.json" ]; do sleep 0.05; done
            touch "$JKO_PRESTARTED_CONTROLPLANE/claimed"
            """) if claims else ":\n"
        with open(path, "w") as f:
            f.write("#!/bin/sh\n"
                    f"case \" $* \" in *\" --list \"*) echo '{name}::t: test'; exit 0;; esac\n"
                    f"echo \"$JKO_PRESTARTED_CONTROLPLANE\" > {self.seen}/{name}\n"
                    f"if [ -n \"$JKO_PRESTARTED_CONTROLPLANE\" ]; then\n{claim}fi\n"
                    "sleep 0.5\n"
                    "echo 'test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; x'\n")
        os.chmod(path, 0o755)
        return (f"tests/{name}.rs", path, [f"{name}::t"])

    def given(self, name):
        with open(os.path.join(self.seen, name)) as f:
            return f.read().strip()

    def test_each_module_claims_a_control_plane_of_its_own_and_none_is_left(self):
        node = self.names[:2]
        integration = [self.module(n, claims=n not in node) for n in self.names]
        code, lines = self.main([], integration)
        self.assertEqual(code, 0, lines)
        claimed = [self.given(n) for n in self.names if n not in node]
        self.assertTrue(all(claimed), "a module was given no control plane")
        self.assertEqual(len(set(claimed)), len(claimed), "two modules were given one control plane")
        # Started while the module before ran: only each lane's first module waited for one.
        waited = [n for n in self.names if os.path.exists(os.path.join(self.seen, f"{n}.waited"))]
        self.assertLessEqual(len(waited), 2, f"these modules waited for a control plane: {waited}")
        # A module that did not claim its control plane left it to a later one.
        for n in node:
            self.assertIn(self.given(n), claimed)
        started = os.listdir(os.path.join(self.dir.name, "target", "tmp", "controlplanes"))
        # At most one started ahead per lane and never used.
        self.assertLessEqual(len(started), len(claimed) + 2, started)
        for d in started:
            d = os.path.join(self.dir.name, "target", "tmp", "controlplanes", d)
            with open(os.path.join(d, "pid")) as f:
                pid = f.read().strip()
            self.assertFalse(os.path.exists(f"/proc/{pid}"), f"{d} is still running")
            self.assertTrue(os.path.exists(os.path.join(d, "stopped")), f"{d} was killed, not stopped")

    def test_turned_off_no_control_plane_is_started(self):
        os.environ["TEST_PRESTART"] = "0"
        self.addCleanup(os.environ.pop, "TEST_PRESTART", None)
        code, lines = self.main([], [self.module(n, claims=True) for n in self.names])
        self.assertEqual(code, 0, lines)
        self.assertEqual([self.given(n) for n in self.names], [""] * len(self.names))
        self.assertFalse(os.path.exists(os.path.join(self.dir.name, "target")))


if __name__ == "__main__":
    unittest.main()
