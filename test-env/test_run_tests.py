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


class Main(unittest.TestCase):
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


if __name__ == "__main__":
    unittest.main()
