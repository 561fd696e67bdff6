#!/usr/bin/env python3
"""Writes an OCI image layout of a busybox image built from the host's static busybox
(Debian's busybox-static), for runtime benchmarks and manual runs without a registry.

usage: make_busybox_image.py OUT_DIR
Then: dockmaster image import OUT_DIR --tag localhost/busybox:bench"""
import gzip, hashlib, io, json, os, subprocess, sys, tarfile

out = sys.argv[1]
blobs = os.path.join(out, "blobs", "sha256")
os.makedirs(blobs, exist_ok=True)

def put(data: bytes) -> str:
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, d), "wb") as f:
        f.write(data)
    return d

busybox = open("/bin/busybox", "rb").read()
applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True).stdout.split()
raw = io.BytesIO()
with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
    def add_dir(name, mode=0o755):
        i = tarfile.TarInfo(name); i.type = tarfile.DIRTYPE; i.mode = mode; t.addfile(i)
    def add_file(name, data, mode=0o644):
        i = tarfile.TarInfo(name); i.size = len(data); i.mode = mode; t.addfile(i, io.BytesIO(data))
    for d in ["bin", "etc", "tmp", "root", "home", "var", "var/www"]:
        add_dir(d, 0o1777 if d == "tmp" else 0o755)
    add_file("bin/busybox", busybox, 0o755)
    for a in applets:
        if a == "busybox":
            continue
        i = tarfile.TarInfo(f"bin/{a}"); i.type = tarfile.SYMTYPE; i.linkname = "busybox"; t.addfile(i)
    add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\nwww:x:33:33:www:/var/www:/bin/false\n")
    add_file("etc/group", b"root:x:0:\nnogroup:x:65534:\nwww:x:33:\nstaff:x:50:www\n")
    add_file("var/www/index.html", b"hello from dockmaster\n")
layer = raw.getvalue()
diff_id = hashlib.sha256(layer).hexdigest()
gz = gzip.compress(layer, 1)
layer_digest = put(gz)
config = json.dumps({
    "architecture": "amd64", "os": "linux",
    "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + diff_id]},
}).encode()
config_digest = put(config)
manifest = json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + config_digest, "size": len(config)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + layer_digest, "size": len(gz)}],
}).encode()
manifest_digest = put(manifest)
with open(os.path.join(out, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
with open(os.path.join(out, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + manifest_digest, "size": len(manifest)}]}, f)
