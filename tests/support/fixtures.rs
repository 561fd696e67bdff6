//! The named fixture images of TESTBED.md, built offline from the host's static busybox.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use sha2::Digest as _;

use super::image::{Format, Healthcheck, Image, ImageBuilder, Index};
use super::layer::{sha256_digest, Blob, Compression, Layer, LayerBuilder, Meta};
use super::registry::{blob_data_path, Registry};

/// Debian's busybox-static: a static binary, so it runs in any rootfs.
pub const BUSYBOX: &str = "/bin/busybox";

/// Applets linked in `/bin` of the busybox rootfs.
pub const APPLETS: &[&str] = &[
    "sh",
    "ash",
    "ls",
    "cat",
    "echo",
    "sleep",
    "httpd",
    "true",
    "false",
    "env",
    "id",
    "ps",
    "mkdir",
    "rm",
    "rmdir",
    "touch",
    "cp",
    "mv",
    "ln",
    "chmod",
    "chown",
    "stat",
    "test",
    "[",
    "printf",
    "hostname",
    "uname",
    "date",
    "kill",
    "wget",
    "nc",
    "grep",
    "sed",
    "awk",
    "head",
    "tail",
    "wc",
    "sha256sum",
    "mount",
    "umount",
    "ip",
    "ifconfig",
    "pwd",
    "readlink",
    "sync",
    "whoami",
    "nslookup",
    "tee",
    "xargs",
    "find",
    "du",
    "df",
    "free",
    "top",
    "uptime",
    "seq",
    "timeout",
    "yes",
    "dd",
    "tr",
    "cut",
    "sort",
    "uniq",
    "basename",
    "dirname",
    "mkfifo",
    "getopt",
    "su",
    "nproc",
    "xxd",
    "od",
];

fn busybox_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        fs::read(BUSYBOX).expect("read /bin/busybox (apt-get install busybox-static)")
    })
}

/// A minimal rootfs layer: `/bin/busybox` with applet symlinks, `/etc/passwd`, `/etc/group`,
/// `/tmp` (1777), `/root` (0700), and the usual mount points. Extend it with more entries.
pub fn busybox_rootfs() -> LayerBuilder {
    let mut l =
        LayerBuilder::new()
            .dir("bin")
            .file_mode("bin/busybox", busybox_bytes().to_vec(), 0o755);
    for a in APPLETS {
        l = l.symlink(&format!("bin/{a}"), "busybox");
    }
    l.dir("dev")
        .dir("etc")
        .file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\n\
             daemon:x:1:1:daemon:/usr/sbin:/bin/false\n\
             www:x:33:33:www:/www:/bin/false\n\
             nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        )
        .file(
            "etc/group",
            "root:x:0:\ndaemon:x:1:\nwww:x:33:\nnogroup:x:65534:\n",
        )
        .file("etc/hostname", "fixture\n")
        .dir("proc")
        .dir_with("root", Meta::mode(0o700))
        .dir("sys")
        .dir_with("tmp", Meta::mode(0o1777))
        .dir("usr")
        .dir("usr/bin")
        .dir("var")
}

/// busybox as an OCI image, gzip, for the host's platform; `Cmd ["sh"]`.
pub fn busybox() -> Image {
    busybox_with(Format::Oci, Compression::Gzip)
}

/// busybox in a given manifest format and layer compression.
pub fn busybox_with(format: Format, compression: Compression) -> Image {
    ImageBuilder::new()
        .layer(busybox_rootfs().compression(compression).build())
        .cmd(&["sh"])
        .format(format)
        .build()
}

/// Three layers exercising whiteouts, an opaque directory, a directory replaced by a file,
/// hard links, a fifo, ownership, modes and an xattr. `image.expected_tree()` is the exact
/// flattened result (tests compare unpacks and exports against it).
pub fn multilayer_whiteouts() -> Image {
    let base = busybox_rootfs()
        .dir("data")
        .file("data/keep.txt", "kept through all layers\n")
        .file("data/remove-me.txt", "deleted by a whiteout in layer 1\n")
        .dir("data/sub")
        .file("data/sub/deep.txt", "deleted with its directory\n")
        .symlink("data/link", "keep.txt")
        .dir("opt")
        .dir("opt/app")
        .file("opt/app/a.txt", "hidden by the opaque dir\n")
        .file("opt/app/b.txt", "hidden by the opaque dir\n")
        .dir("opt/app/nested")
        .file("opt/app/nested/c.txt", "hidden by the opaque dir\n")
        .file("etc/app.conf", "version=1\n")
        .dir("hl")
        .file("hl/original", "hard-linked content\n")
        .hardlink("hl/link", "hl/original")
        .build();
    let middle = LayerBuilder::new()
        .whiteout("data/remove-me.txt")
        .whiteout("data/sub")
        .file("etc/app.conf", "version=2\n")
        .file_with(
            "data/new.txt",
            "owned by 1000:1000\n",
            Meta::owned(0o600, 1000, 1000),
        )
        .xattr("data/new.txt", "user.dockmaster", b"fixture")
        .fifo("data/fifo", 0o640)
        .file_mode("data/setuid", "#!/bin/sh\n", 0o4755)
        .build();
    let top = LayerBuilder::new()
        .dir_with("opt/app", Meta::mode(0o750))
        .opaque("opt/app")
        .file("opt/app/only.txt", "the only file left in /opt/app\n")
        .file("data/sub", "a file where a directory was\n")
        .whiteout("hl/link")
        .build();
    ImageBuilder::new()
        .layer(base)
        .layer(middle)
        .layer(top)
        .cmd(&["sh"])
        .workdir("/data")
        .label("org.dockmaster.fixture", "multilayer-whiteouts")
        .build()
}

/// The port `httpd_with_healthcheck` serves on.
pub const HTTPD_PORT: u16 = 8080;
/// What `GET /` answers in `httpd_with_healthcheck`.
pub const HTTPD_INDEX: &str = "hello from dockmaster fixture httpd\n";

/// busybox httpd on 8080 serving /www, exec-form, with a Docker `Healthcheck` (wget of
/// `/`), as a Docker schema2 image. Note: busybox httpd as PID 1 ignores SIGTERM.
pub fn httpd_with_healthcheck() -> Image {
    ImageBuilder::new()
        .layer(
            busybox_rootfs()
                .dir("www")
                .file("www/index.html", HTTPD_INDEX)
                .file("www/health", "ok\n")
                .build(),
        )
        .format(Format::Docker)
        .cmd(&["httpd", "-f", "-p", "8080", "-h", "/www"])
        .expose("8080/tcp")
        .healthcheck(Healthcheck {
            test: [
                "CMD",
                "wget",
                "-q",
                "-O",
                "/dev/null",
                "http://127.0.0.1:8080/health",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            start_period: Duration::from_secs(0),
            retries: 3,
        })
        .label("org.dockmaster.fixture", "httpd")
        .build()
}

/// An index (OCI) or manifest list (Docker) with linux/amd64, linux/arm64 and linux/arm/v7
/// images; each has `/etc/arch` holding its architecture (e.g. `arm64\n`, `arm/v7\n`).
/// Only the binary is the host's busybox in all three: pick by content, not by running it.
pub fn platform_index(oci: bool) -> Index {
    let format = if oci { Format::Oci } else { Format::Docker };
    let img = |arch: &str, variant: Option<&str>| {
        let name = match variant {
            Some(v) => format!("{arch}/{v}"),
            None => arch.to_string(),
        };
        ImageBuilder::new()
            .layer(busybox_rootfs().build())
            .layer(
                LayerBuilder::new()
                    .file("etc/arch", format!("{name}\n"))
                    .build(),
            )
            .platform("linux", arch, variant)
            .cmd(&["cat", "/etc/arch"])
            .format(format)
            .build()
    };
    Index::new(
        format,
        vec![
            img("amd64", None),
            img("arm64", Some("v8")),
            img("arm", Some("v7")),
        ],
    )
}

/// Flips one byte in the middle of a blob's data file in registry storage; the size stays,
/// the digest no longer matches. Every repository sharing the blob sees the damage.
pub fn tamper_blob(storage: &Path, digest: &str) {
    let p = blob_data_path(storage, digest);
    let mut data = fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    assert!(!data.is_empty(), "blob {digest} is empty");
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&p)
        .expect("open blob for tampering");
    f.write_all(&data).expect("write tampered blob");
}

/// Pushes a small image with a layer no other fixture shares, then corrupts that layer in
/// the registry's storage ([`tamper_blob`]): the registry serves bytes whose sha256 differs
/// from the manifest's descriptor (same size). Returns the image as built (correct digests).
pub fn tampered(reg: &Registry, repo: &str, tag: &str) -> Image {
    static N: AtomicU64 = AtomicU64::new(0);
    let unique = format!(
        "tampered fixture {} {} {repo}:{tag}\n",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    let img = ImageBuilder::new()
        .layer(
            LayerBuilder::new()
                .dir("etc")
                .file("etc/unique", unique.clone())
                .file("etc/filler", pseudo_random(64 * 1024, &unique))
                .build(),
        )
        .cmd(&["sh"])
        .build();
    reg.push(repo, tag, &img);
    tamper_blob(reg.storage(), img.layers[0].digest());
    img
}

/// Deterministic incompressible bytes: SplitMix64 seeded with sha256 of `seed`.
pub fn pseudo_random(len: usize, seed: &str) -> Vec<u8> {
    let key = sha2::Sha256::digest(seed.as_bytes());
    let mut state = u64::from_le_bytes(key[..8].try_into().expect("8 bytes"));
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// An image of `layers` layers holding `total_bytes` of incompressible data together, each a
/// single file `/data/blob-N`. Layers are gzip with stored (uncompressed) deflate blocks:
/// random data would not shrink anyway, and building stays fast.
/// Deterministic: same arguments, same digests.
pub fn large_incompressible(total_bytes: u64, layers: usize) -> Image {
    assert!(layers > 0, "at least one layer");
    let per = (total_bytes / layers as u64) as usize;
    let mut b = ImageBuilder::new().cmd(&["sh"]);
    for i in 0..layers {
        let content = pseudo_random(per, &format!("large {total_bytes} {layers} {i}"));
        let mut tar = tar::Builder::new(Vec::with_capacity(per + 4096));
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_mtime(super::layer::FIXTURE_MTIME);
        h.set_size(0);
        tar.append_data(&mut h, "data/", std::io::empty())
            .expect("tar dir");
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_mtime(super::layer::FIXTURE_MTIME);
        h.set_size(content.len() as u64);
        tar.append_data(&mut h, format!("data/blob-{i}"), content.as_slice())
            .expect("tar file");
        let tar = tar.into_inner().expect("finish tar");
        let diff_id = sha256_digest(&tar);
        let mut gz = flate2::write::GzEncoder::new(
            Vec::with_capacity(tar.len() + tar.len() / 100),
            flate2::Compression::none(),
        );
        gz.write_all(&tar).expect("gzip");
        let data = gz.finish().expect("gzip");
        b = b.layer(Layer {
            blob: Blob::new(Compression::Gzip.layer_media_type(false), data),
            diff_id,
            compression: Compression::Gzip,
            media_type_override: None,
            entries: None,
        });
    }
    b.build()
}
