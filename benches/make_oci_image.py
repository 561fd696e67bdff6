#!/usr/bin/env python3
"""Writes an OCI image layout with N layers of incompressible data (for pull benchmarks).

usage: make_oci_image.py OUT_DIR TOTAL_MB LAYERS
Each layer is a gzip'd tar holding one file of random bytes. No internet, no tools but
Python's standard library."""
import gzip, hashlib, io, json, os, sys, tarfile

out, total_mb, nlayers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
blobs = os.path.join(out, "blobs", "sha256")
os.makedirs(blobs, exist_ok=True)

def put(data: bytes) -> str:
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, d), "wb") as f:
        f.write(data)
    return d

layers, diff_ids = [], []
per = total_mb * 1024 * 1024 // nlayers
for i in range(nlayers):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        d = tarfile.TarInfo(f"data{i}")
        d.type = tarfile.DIRTYPE
        d.mode = 0o755
        t.addfile(d)
        # several files per layer, like a real image
        for j in range(8):
            info = tarfile.TarInfo(f"data{i}/blob{j}.bin")
            info.size = per // 8
            info.mode = 0o644
            t.addfile(info, io.BytesIO(os.urandom(info.size)))
    tar_bytes = raw.getvalue()
    diff_ids.append("sha256:" + hashlib.sha256(tar_bytes).hexdigest())
    gz = gzip.compress(tar_bytes, compresslevel=1, mtime=0)
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                   "digest": "sha256:" + put(gz), "size": len(gz)})

config = json.dumps({"architecture": "amd64", "os": "linux",
                     "config": {"Cmd": ["/bin/sh"]},
                     "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": "sha256:" + put(config), "size": len(config)},
                       "layers": layers}).encode()
md = put(manifest)
with open(os.path.join(out, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + md,
        "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}, f)
with open(os.path.join(out, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
print("sha256:" + md)
