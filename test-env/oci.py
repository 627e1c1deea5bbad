#!/usr/bin/env python3
"""OCI images for test-env/release.sh: the two platforms' archives made into one image index, that
index pushed to a registry, and what a registry serves read back.

  oci.py index OUT.tar REF ARCHIVE...     one OCI archive (image layout) whose index.json names an
                                          image index of the archives' images, with their
                                          platforms; prints the index's digest
  oci.py push LAYOUT.tar REGISTRY REPO TAG
                                          every blob and manifest of the layout, then the index
                                          under TAG (registry API over plain HTTP: loopback only);
                                          prints the pushed index's digest
  oci.py show REGISTRY REPO REF BINARY    the image index REF as the registry serves it: per
                                          platform, the manifest digest, the sizes compressed
                                          (what a node pulls) and not (its layers' tar
                                          streams), and the sha256 of the file BINARY (a path
                                          in the image)
  oci.py rootfs LAYOUT.tar PLATFORM DIR  the file system of the index's image for PLATFORM (e.g.
                                          linux/arm64), its layers unpacked into DIR
  oci.py tamper REGISTRY REPO TAG         pulls the index under TAG, adds a layer (one file,
                                          /tampered) to its first image and pushes the result
                                          under the same TAG: what an attacker with push rights
                                          would do; prints the new digest

Nothing here verifies a signature: cosign does (test-env/release.sh).
"""

import gzip
import hashlib
import io
import json
import sys
import tarfile
import urllib.error
import urllib.request

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
ACCEPT = ", ".join(
    [INDEX, MANIFEST, "application/vnd.docker.distribution.manifest.list.v2+json", "application/vnd.docker.distribution.manifest.v2+json"]
)


def digest_of(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical(obj):
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def read_layout(path):
    """(index.json, {digest: bytes}) of an OCI archive."""
    blobs = {}
    index = None
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            data = tar.extractfile(member).read()
            name = member.name.lstrip("./")
            if name == "index.json":
                index = json.loads(data)
            elif name.startswith("blobs/sha256/"):
                blobs["sha256:" + name.rsplit("/", 1)[1]] = data
    if index is None:
        sys.exit(f"oci.py: {path} has no index.json")
    return index, blobs


def write_layout(path, index, blobs):
    with tarfile.open(path, "w") as tar:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))

        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", canonical(index))
        for digest in sorted(blobs):
            add("blobs/sha256/" + digest.split(":", 1)[1], blobs[digest])


def cmd_index(out, ref, archives):
    blobs = {}
    manifests = []
    for archive in archives:
        index, archive_blobs = read_layout(archive)
        blobs.update(archive_blobs)
        for desc in index["manifests"]:
            manifest = json.loads(blobs[desc["digest"]])
            config = json.loads(blobs[manifest["config"]["digest"]])
            platform = {"architecture": config["architecture"], "os": config["os"]}
            if config.get("variant"):
                platform["variant"] = config["variant"]
            manifests.append({"mediaType": MANIFEST, "digest": desc["digest"], "size": desc["size"], "platform": platform})
    manifests.sort(key=lambda m: (m["platform"]["os"], m["platform"]["architecture"]))
    image_index = canonical({"schemaVersion": 2, "mediaType": INDEX, "manifests": manifests})
    digest = digest_of(image_index)
    blobs[digest] = image_index
    top = {
        "schemaVersion": 2,
        "manifests": [{"mediaType": INDEX, "digest": digest, "size": len(image_index), "annotations": {"org.opencontainers.image.ref.name": ref}}],
    }
    write_layout(out, top, blobs)
    print(digest)


class Registry:
    def __init__(self, host, repo):
        self.base = f"http://{host}/v2/{repo}"

    def request(self, method, url, data=None, headers=None):
        req = urllib.request.Request(url if url.startswith("http") else self.base + url, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def has_blob(self, digest):
        return self.request("HEAD", f"/blobs/{digest}")[0] == 200

    def put_blob(self, data):
        digest = digest_of(data)
        if self.has_blob(digest):
            return digest
        status, headers, body = self.request("POST", "/blobs/uploads/")
        if status != 202:
            sys.exit(f"oci.py: starting an upload: {status} {body[:200]!r}")
        location = headers["Location"]
        if not location.startswith("http"):
            location = self.base.split("/v2/")[0] + location
        sep = "&" if "?" in location else "?"
        status, _, body = self.request("PUT", f"{location}{sep}digest={digest}", data, {"Content-Type": "application/octet-stream"})
        if status != 201:
            sys.exit(f"oci.py: uploading {digest}: {status} {body[:200]!r}")
        return digest

    def put_manifest(self, ref, data, media_type):
        status, headers, body = self.request("PUT", f"/manifests/{ref}", data, {"Content-Type": media_type})
        if status != 201:
            sys.exit(f"oci.py: pushing manifest {ref}: {status} {body[:300]!r}")
        return headers.get("Docker-Content-Digest", digest_of(data))

    def get_manifest(self, ref):
        status, headers, body = self.request("GET", f"/manifests/{ref}", headers={"Accept": ACCEPT})
        if status != 200:
            sys.exit(f"oci.py: manifest {ref}: {status} {body[:200]!r}")
        return headers.get("Content-Type", "").split(";")[0], body

    def get_blob(self, digest):
        status, _, body = self.request("GET", f"/blobs/{digest}")
        if status != 200:
            sys.exit(f"oci.py: blob {digest}: {status}")
        if digest_of(body) != digest:
            sys.exit(f"oci.py: blob {digest} does not match its digest")
        return body


def push_image(reg, manifest_bytes, blobs):
    manifest = json.loads(manifest_bytes)
    for desc in [manifest["config"]] + manifest["layers"]:
        reg.put_blob(blobs[desc["digest"]])
    return reg.put_manifest(digest_of(manifest_bytes), manifest_bytes, MANIFEST)


def cmd_push(layout, host, repo, tag):
    index, blobs = read_layout(layout)
    reg = Registry(host, repo)
    (top,) = index["manifests"]
    image_index = blobs[top["digest"]]
    for desc in json.loads(image_index)["manifests"]:
        push_image(reg, blobs[desc["digest"]], blobs)
    print(reg.put_manifest(tag, image_index, INDEX))


def file_in_layers(reg, manifest, path):
    """The bytes of PATH in an image (the last layer that has it), and the size of its layers
    uncompressed (their tar streams)."""
    found = None
    unpacked = 0
    for desc in manifest["layers"]:
        layer = reg.get_blob(desc["digest"])
        if desc["mediaType"].endswith("gzip"):
            layer = gzip.decompress(layer)
        unpacked += len(layer)
        with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
            for member in tar.getmembers():
                if member.isfile() and "/" + member.name.lstrip("./") == path:
                    found = tar.extractfile(member).read()
    return found, unpacked


def cmd_show(host, repo, ref, path):
    reg = Registry(host, repo)
    media_type, body = reg.get_manifest(ref)
    if media_type != INDEX:
        sys.exit(f"oci.py: {repo}:{ref} is a {media_type}, not an image index")
    for desc in json.loads(body)["manifests"]:
        _, manifest_bytes = reg.get_manifest(desc["digest"])
        manifest = json.loads(manifest_bytes)
        binary, unpacked = file_in_layers(reg, manifest, path)
        size = manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])
        print(json.dumps({
            "platform": f"{desc['platform']['os']}/{desc['platform']['architecture']}",
            "digest": desc["digest"],
            "compressed_size": size,
            "uncompressed_size": manifest["config"]["size"] + unpacked,
            "binary_sha256": hashlib.sha256(binary).hexdigest() if binary is not None else None,
        }))


def cmd_rootfs(layout, platform, out):
    index, blobs = read_layout(layout)
    (top,) = index["manifests"]
    for desc in json.loads(blobs[top["digest"]])["manifests"]:
        if f"{desc['platform']['os']}/{desc['platform']['architecture']}" == platform:
            break
    else:
        sys.exit(f"oci.py: no {platform} image in {layout}")
    for layer in json.loads(blobs[desc["digest"]])["layers"]:
        data = blobs[layer["digest"]]
        if layer["mediaType"].endswith("gzip"):
            data = gzip.decompress(data)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(out, filter="tar")


def cmd_tamper(host, repo, tag):
    reg = Registry(host, repo)
    _, body = reg.get_manifest(tag)
    image_index = json.loads(body)
    first = image_index["manifests"][0]
    _, manifest_bytes = reg.get_manifest(first["digest"])
    manifest = json.loads(manifest_bytes)
    config = json.loads(reg.get_blob(manifest["config"]["digest"]))
    # One more layer: a file the signer never saw.
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        data = b"not what was signed\n"
        info = tarfile.TarInfo("tampered")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    layer = gzip.compress(raw.getvalue(), mtime=0)
    config["rootfs"]["diff_ids"].append(digest_of(raw.getvalue()))
    config_bytes = canonical(config)
    manifest["layers"].append({"mediaType": LAYER_GZIP, "digest": digest_of(layer), "size": len(layer)})
    manifest["config"] = dict(manifest["config"], digest=digest_of(config_bytes), size=len(config_bytes))
    reg.put_blob(layer)
    reg.put_blob(config_bytes)
    new_manifest = canonical(manifest)
    first.update(digest=reg.put_manifest(digest_of(new_manifest), new_manifest, MANIFEST), size=len(new_manifest))
    print(reg.put_manifest(tag, canonical(image_index), INDEX))


def main():
    args = sys.argv[1:]
    commands = {
        "index": (lambda a: cmd_index(a[0], a[1], a[2:]), 3),
        "push": (lambda a: cmd_push(*a), 4),
        "show": (lambda a: cmd_show(*a), 4),
        "rootfs": (lambda a: cmd_rootfs(*a), 3),
        "tamper": (lambda a: cmd_tamper(*a), 3),
    }
    if not args or args[0] not in commands or len(args) - 1 < commands[args[0]][1]:
        sys.exit(__doc__)
    commands[args[0]][0](args[1:])


if __name__ == "__main__":
    main()
