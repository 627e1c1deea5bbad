#!/usr/bin/env python3
"""The release's SBOMs (test-env/release.sh): CycloneDX 1.6 JSON of one operator binary, and the
check that it lists exactly the crates compiled into that binary.

  sbom.py generate --build BUILD.jsonl --metadata METADATA.json --lock Cargo.lock \
                   --binary BIN --target TRIPLE --platform linux/arm64 > SBOM.json
  sbom.py check --sbom SBOM.json --binary BIN --lock Cargo.lock --tree TREE.txt \
                --tree-build TREE-BUILD.txt --tree-all TREE-ALL.txt

What "compiled in" means here: the crates whose code is linked into the binary. That is what
cargo compiled *for the target* while building the binary: with `--target`, every library cargo
builds for the target platform lands in `<target dir>/<triple>/`, while build scripts,
proc-macros and their dependencies are compiled for the build machine (`<target dir>/<profile>/`),
run during the build and are not in the binary. `generate` reads the list from cargo's own
record of the build (`cargo build --message-format=json`: a `compiler-artifact` message per
compiled unit, with its package and the files it wrote), and the versions, licences and checksums
from `cargo metadata` and Cargo.lock.

`check` compares that list, independently, with cargo's dependency graph for the target:
`cargo tree -e normal,no-proc-macro --target TRIPLE` (normal dependencies only, for that
platform, not through proc-macros: the crates linked in). Both must hold the same crates at the
same versions, the SBOM's binary digest must be the binary's, and every other package of
Cargo.lock is accounted for: build-time only (`cargo tree -e normal,build`: build scripts,
proc-macros), for tests only or other platforms (`cargo tree -e all --target all`), or optional
dependencies of dependencies whose features nothing enables (in Cargo.lock, in no build).
"""

import argparse
import hashlib
import json
import re
import sys
import tomllib
import uuid


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def lock_packages(path):
    """(name, version) -> the Cargo.lock entry."""
    with open(path, "rb") as f:
        lock = tomllib.load(f)
    return {(p["name"], p["version"]): p for p in lock.get("package", [])}


def spdx_expression(text):
    """Cargo's licence field as an SPDX expression (old crates write `MIT/Apache-2.0`)."""
    return re.sub(r"\s*/\s*", " OR ", text.strip())


def compiled_for_target(build_jsonl, triple):
    """package id -> kinds, for every unit cargo compiled for the target platform (not for the
    build machine): the libraries linked into the binary, and the binary itself."""
    units = {}
    with open(build_jsonl) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            msg = json.loads(line)
            if msg.get("reason") != "compiler-artifact":
                continue
            kinds = msg["target"]["kind"]
            if "custom-build" in kinds or "proc-macro" in kinds:
                continue
            if not any(f"/{triple}/" in name for name in msg.get("filenames", [])):
                continue
            units.setdefault(msg["package_id"], set()).update(kinds)
    return units


def generate(args):
    with open(args.metadata) as f:
        metadata = json.load(f)
    packages = {p["id"]: p for p in metadata["packages"]}
    lock = lock_packages(args.lock)
    root_id = metadata["resolve"]["root"]
    units = compiled_for_target(args.build, args.target)
    if root_id not in units:
        sys.exit(f"sbom.py: the build record {args.build} has no unit of the operator for {args.target}")

    def component(pkg):
        c = {
            "type": "library",
            "bom-ref": f"pkg:cargo/{pkg['name']}@{pkg['version']}",
            "name": pkg["name"],
            "version": pkg["version"],
            "purl": f"pkg:cargo/{pkg['name']}@{pkg['version']}",
        }
        if pkg.get("license"):
            c["licenses"] = [{"expression": spdx_expression(pkg["license"])}]
        elif pkg.get("license_file"):
            c["licenses"] = [{"license": {"name": f"the crate's {pkg['license_file']}"}}]
        entry = lock.get((pkg["name"], pkg["version"]))
        if entry and entry.get("checksum"):
            # The checksum Cargo.lock pins: the SHA-256 of the .crate file.
            c["hashes"] = [{"alg": "SHA-256", "content": entry["checksum"]}]
        return c

    root = packages[root_id]
    binary_hash = sha256(args.binary)
    components = sorted(
        (component(packages[pid]) for pid in units if pid != root_id),
        key=lambda c: (c["name"], c["version"]),
    )
    main = component(root)
    main.update(
        {
            "type": "application",
            "bom-ref": f"pkg:cargo/{root['name']}@{root['version']}?arch={args.platform.split('/')[1]}",
            "hashes": [{"alg": "SHA-256", "content": binary_hash}],
            "properties": [
                {"name": "platform", "value": args.platform},
                {"name": "rust-target", "value": args.target},
                {"name": "rustc", "value": args.rustc},
            ],
        }
    )
    # Linked crates depend on one another as cargo's graph says; only edges between listed crates.
    refs = {pid: (main["bom-ref"] if pid == root_id else f"pkg:cargo/{packages[pid]['name']}@{packages[pid]['version']}") for pid in units}
    dependencies = []
    for node in metadata["resolve"]["nodes"]:
        if node["id"] not in units:
            continue
        on = sorted({refs[d["pkg"]] for d in node["deps"] if d["pkg"] in units and any(k["kind"] is None for k in d["dep_kinds"])})
        dependencies.append({"ref": refs[node["id"]], "dependsOn": on})
    dependencies.sort(key=lambda d: d["ref"])
    bom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        # Same binary, same serial number: the SBOM is reproducible.
        "serialNumber": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'sha256:' + binary_hash)}",
        "version": 1,
        "metadata": {
            "timestamp": args.timestamp,
            "tools": {"components": [{"type": "application", "name": "test-env/sbom.py", "description": "jetstream-kv-operator's release script"}]},
            "component": main,
        },
        "components": components,
        "dependencies": dependencies,
    }
    json.dump(bom, sys.stdout, indent=2)
    sys.stdout.write("\n")


def tree_packages(path):
    """{(name, version)} of a `cargo tree --prefix none --format '{p}'` listing."""
    out = set()
    with open(path) as f:
        for line in f:
            m = re.match(r"^(\S+) v(\S+)", line.strip())
            if m:
                out.add((m.group(1), m.group(2)))
    return out


def check(args):
    with open(args.sbom) as f:
        bom = json.load(f)
    problems = []
    main = bom["metadata"]["component"]
    digest = {h["alg"]: h["content"] for h in main.get("hashes", [])}.get("SHA-256")
    actual = sha256(args.binary)
    if digest != actual:
        problems.append(f"the SBOM describes a binary of sha256 {digest}, {args.binary} is {actual}")
    listed = {(c["name"], c["version"]) for c in bom["components"]} | {(main["name"], main["version"])}
    no_licence = sorted(f"{c['name']} {c['version']}" for c in bom["components"] if not c.get("licenses"))
    if no_licence:
        problems.append(f"no licence for {', '.join(no_licence)}")
    linked = tree_packages(args.tree)
    for name, version in sorted(linked - listed):
        problems.append(f"{name} {version} is linked in (cargo tree) but not in the SBOM")
    for name, version in sorted(listed - linked):
        problems.append(f"{name} {version} is in the SBOM but not linked in (cargo tree)")
    lock = set(lock_packages(args.lock))
    for name, version in sorted(listed - lock):
        problems.append(f"{name} {version} is in the SBOM but not in Cargo.lock")
    build_time = tree_packages(args.tree_build) - linked
    elsewhere = tree_packages(args.tree_all) - linked - build_time
    # Cargo.lock also pins optional dependencies of dependencies whose features nothing enables:
    # no cargo tree reaches them, and no build compiles them.
    never = lock - listed - build_time - elsewhere
    if problems:
        print("\n".join(f"    SBOM check failed: {p}" for p in problems), file=sys.stderr)
        sys.exit(1)
    in_lock = lock & listed
    print(
        f"    {args.sbom}: binary sha256 {actual[:16]}..., {len(listed)} crates = the {len(linked)} "
        f"cargo tree links in; of Cargo.lock's {len(lock)}: {len(in_lock)} listed, "
        f"{len(build_time & lock)} build-time only (build scripts, proc-macros), "
        f"{len(elsewhere & lock)} for tests or other platforms only, {len(never)} optional and never "
        f"enabled ({', '.join(sorted(n for n, _ in never))})"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--build", required=True, help="cargo build --message-format=json output")
    g.add_argument("--metadata", required=True, help="cargo metadata --format-version 1 output")
    g.add_argument("--lock", required=True)
    g.add_argument("--binary", required=True)
    g.add_argument("--target", required=True, help="the Rust target triple")
    g.add_argument("--platform", required=True, help="the OCI platform, e.g. linux/arm64")
    g.add_argument("--rustc", required=True, help="rustc --version")
    g.add_argument("--timestamp", required=True, help="RFC 3339 time (the commit's)")
    c = sub.add_parser("check")
    c.add_argument("--sbom", required=True)
    c.add_argument("--binary", required=True)
    c.add_argument("--lock", required=True)
    c.add_argument("--tree", required=True, help="cargo tree -e normal,no-proc-macro --target T")
    c.add_argument("--tree-build", required=True, help="cargo tree -e normal,build --target T")
    c.add_argument("--tree-all", required=True, help="cargo tree -e all --target all")
    args = parser.parse_args()
    {"generate": generate, "check": check}[args.command](args)


if __name__ == "__main__":
    main()
