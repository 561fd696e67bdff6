#!/usr/bin/env python3
"""Adds a layer with host files (and the shared libraries they need, from ldd) to an OCI image
layout written by make_busybox_image.py, for the network benchmark: iperf3 from Debian's
package runs in the busybox image this way. The layout keeps one image, rewritten in place.

usage: net_image.py LAYOUT_DIR /usr/bin/iperf3 [MORE_FILES...]"""
import gzip, hashlib, io, json, os, subprocess, sys, tarfile

layout = sys.argv[1]
blobs = os.path.join(layout, "blobs", "sha256")


def put(data: bytes) -> str:
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, d), "wb") as f:
        f.write(data)
    return d


def get(digest: str) -> bytes:
    return open(os.path.join(blobs, digest.split(":", 1)[1]), "rb").read()


# Every file plus what ldd says it loads (resolved through symlinks; stored under the path
# the loader looks for, which for Debian is /lib/x86_64-linux-gnu and /lib64).
files = {}
for f in sys.argv[2:]:
    files[f] = os.path.realpath(f)
    out = subprocess.run(["ldd", f], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
            files[parts[2]] = os.path.realpath(parts[2])
        elif parts and parts[0].startswith("/"):
            files[parts[0]] = os.path.realpath(parts[0])

raw = io.BytesIO()
with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
    dirs = set()
    for dest in sorted(files):
        parent = os.path.dirname(dest).lstrip("/")
        chain = []
        while parent and parent not in dirs:
            chain.append(parent)
            dirs.add(parent)
            parent = os.path.dirname(parent)
        for d in reversed(chain):
            i = tarfile.TarInfo(d)
            i.type = tarfile.DIRTYPE
            i.mode = 0o755
            t.addfile(i)
    for dest, src in sorted(files.items()):
        data = open(src, "rb").read()
        i = tarfile.TarInfo(dest.lstrip("/"))
        i.size = len(data)
        i.mode = 0o755
        t.addfile(i, io.BytesIO(data))
layer = raw.getvalue()
diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
gz = gzip.compress(layer, 1)
layer_digest = "sha256:" + put(gz)

index = json.load(open(os.path.join(layout, "index.json")))
assert len(index["manifests"]) == 1, "the layout must hold exactly one image"
manifest = json.loads(get(index["manifests"][0]["digest"]))
config = json.loads(get(manifest["config"]["digest"]))
config["rootfs"]["diff_ids"].append(diff_id)
config_bytes = json.dumps(config).encode()
manifest["config"]["digest"] = "sha256:" + put(config_bytes)
manifest["config"]["size"] = len(config_bytes)
manifest["layers"].append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                           "digest": layer_digest, "size": len(gz)})
manifest_bytes = json.dumps(manifest).encode()
index["manifests"][0]["digest"] = "sha256:" + put(manifest_bytes)
index["manifests"][0]["size"] = len(manifest_bytes)
with open(os.path.join(layout, "index.json"), "w") as f:
    json.dump(index, f)
