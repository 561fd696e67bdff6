//! Unit tests of the layer applier, run as root for real: breakouts (with a sentinel directory
//! next to the target that must stay untouched), whiteouts in both modes, metadata, malformed
//! input, compression and stream consumption.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ::tar::{EntryType, Header};
use sha2::{Digest as _, Sha256};

use super::*;

const MTIME: u64 = 1_600_000_000;

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the unpack tests must run as root (ownership, devices, trusted.* xattrs)"
    );
}

/// Builds layer tars, including entries the `tar` crate's checked setters refuse (`..`,
/// absolute names, whiteout names): names are written straight into the header.
struct Layer {
    b: ::tar::Builder<Vec<u8>>,
}

impl Layer {
    fn new() -> Layer {
        Layer {
            b: ::tar::Builder::new(Vec::new()),
        }
    }

    fn entry(
        &mut self,
        name: &str,
        kind: EntryType,
        link: &str,
        data: &[u8],
        edit: impl FnOnce(&mut Header),
    ) -> &mut Layer {
        let mut h = Header::new_ustar();
        assert!(
            name.len() <= 100 && link.len() <= 100,
            "use the long-name helpers"
        );
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(if kind == EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        edit(&mut h);
        h.set_cksum();
        self.b.append(&h, data).expect("append entry");
        self
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Layer {
        self.entry(name, EntryType::Regular, "", data, |_| {})
    }

    fn dir(&mut self, name: &str) -> &mut Layer {
        self.entry(name, EntryType::Directory, "", b"", |_| {})
    }

    fn symlink(&mut self, name: &str, target: &str) -> &mut Layer {
        self.entry(name, EntryType::Symlink, target, b"", |h| h.set_mode(0o777))
    }

    fn hardlink(&mut self, name: &str, target: &str) -> &mut Layer {
        self.entry(name, EntryType::Link, target, b"", |_| {})
    }

    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Layer {
        self.b
            .append_pax_extensions(records.iter().copied())
            .expect("append pax");
        self
    }

    fn finish(self) -> Vec<u8> {
        self.b.into_inner().expect("finish tar")
    }
}

fn apply_bytes(tar: &[u8], dest: &Path, mode: WhiteoutMode) -> Result<ApplyStats, UnpackError> {
    apply_layer(
        tar,
        dest,
        &ApplyOptions {
            layer: "sha256:test",
            whiteouts: mode,
        },
    )
}

/// A scratch directory holding the target `root` and, next to it, `outside/sentinel`.
struct Sandbox {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
    outside: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        require_root();
        let tmp = tempfile::tempdir().expect("tempdir");
        let base = tmp.path().to_path_buf();
        let root = base.join("root");
        let outside = base.join("outside");
        fs::create_dir(&root).expect("mkdir root");
        fs::create_dir(&outside).expect("mkdir outside");
        fs::write(outside.join("sentinel"), "sentinel").expect("write sentinel");
        fs::set_permissions(outside.join("sentinel"), fs::Permissions::from_mode(0o600))
            .expect("chmod sentinel");
        Sandbox {
            _tmp: tmp,
            base,
            root,
            outside,
        }
    }

    fn apply(&self, tar: &[u8]) -> Result<ApplyStats, UnpackError> {
        apply_bytes(tar, &self.root, WhiteoutMode::Apply)
    }

    /// Nothing next to the root changed: only root/ and outside/, and outside/ still holds
    /// exactly the sentinel, with its content, mode, owner and link count.
    fn assert_untouched(&self) {
        let mut names: Vec<_> = fs::read_dir(&self.base)
            .expect("read base")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["outside", "root"],
            "something was written next to the root"
        );
        let inside: Vec<_> = fs::read_dir(&self.outside)
            .expect("read outside")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(inside, ["sentinel"], "outside/ changed");
        let sentinel = self.outside.join("sentinel");
        assert_eq!(fs::read_to_string(&sentinel).expect("read"), "sentinel");
        let md = fs::symlink_metadata(&sentinel).expect("lstat sentinel");
        assert_eq!(md.mode() & 0o7777, 0o600, "sentinel mode changed");
        assert_eq!(
            (md.uid(), md.gid(), md.nlink()),
            (0, 0, 1),
            "sentinel changed"
        );
    }
}

fn lstat(p: impl AsRef<Path>) -> fs::Metadata {
    fs::symlink_metadata(p.as_ref())
        .unwrap_or_else(|e| panic!("lstat {}: {e}", p.as_ref().display()))
}

// ---- breakouts -------------------------------------------------------------------------

#[test]
fn dotdot_names_that_climb_out_are_refused() {
    for name in ["../x", "../../outside/sentinel", "a/../../../y", "./../z"] {
        let sb = Sandbox::new();
        let mut l = Layer::new();
        l.file("ok", b"fine").file(name, b"dotdot");
        let err = sb.apply(&l.finish()).expect_err(name).to_string();
        assert!(err.contains(name.trim_start_matches("./")), "{name}: {err}");
        assert!(err.contains("climbs out"), "{name}: {err}");
        sb.assert_untouched();
    }
    // `..` that stays inside is fine
    let sb = Sandbox::new();
    let mut l = Layer::new();
    l.file("a/../b", b"inside");
    sb.apply(&l.finish()).expect("apply");
    assert_eq!(fs::read(sb.root.join("b")).expect("b"), b"inside");
    sb.assert_untouched();
}

#[test]
fn absolute_names_are_relative_to_the_root() {
    let sb = Sandbox::new();
    let target = sb.outside.join("sentinel");
    let mut l = Layer::new();
    l.file("/abs", b"abs")
        .file(target.to_str().expect("utf-8"), b"pwned");
    sb.apply(&l.finish()).expect("apply");
    assert_eq!(fs::read(sb.root.join("abs")).expect("abs"), b"abs");
    let inner = sb
        .root
        .join(target.strip_prefix("/").expect("absolute temp dir"));
    assert_eq!(fs::read(inner).expect("inner copy"), b"pwned");
    sb.assert_untouched();
}

#[test]
fn symlinked_parents_resolve_inside_the_root() {
    let sb = Sandbox::new();
    let outside = sb.outside.to_str().expect("utf-8").to_string();
    let mut l = Layer::new();
    // Absolute, relative-escaping and chained symlinks used as parents.
    l.symlink("abs", &outside)
        .file("abs/pwned", b"1")
        .symlink("rel", "../../../../outside")
        .file("rel/pwned", b"2")
        .symlink("chain", "rel")
        .file("chain/pwned2", b"3")
        .symlink("hostetc", "/etc")
        .file("hostetc/dockmaster-unpack-test", b"4")
        .symlink("dotdot", "..")
        .file("dotdot/pwned3", b"5");
    sb.apply(&l.finish()).expect("apply");
    let inner_outside = sb.root.join(outside.trim_start_matches('/'));
    assert_eq!(fs::read(inner_outside.join("pwned")).expect("abs"), b"1");
    assert_eq!(fs::read(sb.root.join("outside/pwned")).expect("rel"), b"2");
    assert_eq!(
        fs::read(sb.root.join("outside/pwned2")).expect("chain"),
        b"3"
    );
    assert_eq!(
        fs::read(sb.root.join("etc/dockmaster-unpack-test")).expect("etc"),
        b"4"
    );
    assert_eq!(fs::read(sb.root.join("pwned3")).expect("dotdot"), b"5");
    assert!(!Path::new("/etc/dockmaster-unpack-test").exists());
    sb.assert_untouched();
}

#[test]
fn hardlinks_never_reach_outside() {
    let sb = Sandbox::new();
    let passwd_links = lstat("/etc/passwd").nlink();
    for target in [
        "/etc/passwd".to_string(),
        "../../../../../etc/passwd".to_string(),
        sb.outside
            .join("sentinel")
            .to_str()
            .expect("utf-8")
            .to_string(),
        "../outside/sentinel".to_string(),
    ] {
        let mut l = Layer::new();
        l.hardlink("pw", &target);
        let err = sb.apply(&l.finish()).expect_err("link to a missing target");
        let msg = err.to_string();
        assert!(
            msg.contains("sha256:test") && msg.contains("\"pw\""),
            "error names layer and entry: {msg}"
        );
        assert!(!sb.root.join("pw").exists());
    }
    // Through a symlink pointing outside: resolved inside, where nothing exists either.
    let mut l = Layer::new();
    l.symlink("e", "/etc").hardlink("pw2", "e/passwd");
    assert!(sb.apply(&l.finish()).is_err());
    assert_eq!(lstat("/etc/passwd").nlink(), passwd_links);
    sb.assert_untouched();
}

#[test]
fn final_symlinks_are_replaced_never_followed() {
    let sb = Sandbox::new();
    let sentinel = sb.outside.join("sentinel");
    let mut l = Layer::new();
    l.symlink("s", sentinel.to_str().expect("utf-8"))
        .file("s", b"replaced")
        .symlink("d", sb.outside.to_str().expect("utf-8"))
        .dir("d")
        .file("d/sentinel", b"inside")
        .symlink("h", sentinel.to_str().expect("utf-8"))
        .entry("h", EntryType::Link, "s", b"", |h| h.set_mode(0o777))
        .symlink("n", sentinel.to_str().expect("utf-8"))
        .entry("n", EntryType::Fifo, "", b"", |_| {});
    sb.apply(&l.finish()).expect("apply");
    assert_eq!(fs::read(sb.root.join("s")).expect("s"), b"replaced");
    assert!(lstat(sb.root.join("d")).is_dir());
    assert_eq!(fs::read(sb.root.join("d/sentinel")).expect("d"), b"inside");
    assert_eq!(
        lstat(sb.root.join("h")).ino(),
        lstat(sb.root.join("s")).ino()
    );
    assert!(lstat(sb.root.join("n")).file_type().is_fifo());
    sb.assert_untouched();
}

#[test]
fn hardlink_to_a_symlink_does_not_chmod_its_target() {
    let sb = Sandbox::new();
    let sentinel = sb.outside.join("sentinel");
    let mut l = Layer::new();
    l.symlink("link", sentinel.to_str().expect("utf-8")).entry(
        "sketchy",
        EntryType::Link,
        "link",
        b"",
        |h| {
            h.set_mode(0o777);
            h.set_uid(1000);
        },
    );
    sb.apply(&l.finish()).expect("apply");
    assert!(lstat(sb.root.join("sketchy")).file_type().is_symlink());
    sb.assert_untouched();
}

#[test]
fn whiteouts_and_opaque_markers_through_symlinks_stay_inside() {
    let sb = Sandbox::new();
    let outside = sb.outside.to_str().expect("utf-8").to_string();
    let mut l = Layer::new();
    l.symlink("o", &outside)
        .file("o/.wh.sentinel", b"")
        .file("o/.wh..wh..opq", b"")
        .symlink("r", "../outside")
        .file("r/.wh.sentinel", b"")
        .file("r/.wh..wh..opq", b"");
    sb.apply(&l.finish()).expect("apply");
    sb.assert_untouched();

    let sb = Sandbox::new();
    let mut l = Layer::new();
    l.symlink("o", &outside)
        .file("o/.wh.sentinel", b"")
        .file("o/.wh..wh..opq", b"");
    apply_bytes(&l.finish(), &sb.root, WhiteoutMode::Overlay).expect("overlay apply");
    sb.assert_untouched();
}

#[test]
fn invalid_whiteout_names_are_refused() {
    for name in [".wh.", ".wh..", ".wh...", "etc/.wh.."] {
        let sb = Sandbox::new();
        fs::create_dir(sb.root.join("etc")).expect("mkdir");
        fs::write(sb.root.join("etc/passwd"), "x").expect("write");
        let mut l = Layer::new();
        l.file(name, b"");
        let err = sb.apply(&l.finish()).expect_err(name);
        assert!(err.to_string().contains("invalid whiteout"), "{err}");
        assert_eq!(err.category(), Category::Invalid);
        assert!(sb.root.join("etc/passwd").exists());
        sb.assert_untouched();
    }
}

// ---- whiteouts ---------------------------------------------------------------------------

#[test]
fn apply_mode_whiteouts_and_opaque_directories() {
    let sb = Sandbox::new();
    let mut lower = Layer::new();
    lower
        .dir("a")
        .file("a/old", b"old")
        .dir("a/sub")
        .file("a/sub/deep", b"deep")
        .file("gone", b"gone")
        .dir("gonedir")
        .file("gonedir/f", b"f")
        .file("keep", b"keep");
    sb.apply(&lower.finish()).expect("lower");
    let mut upper = Layer::new();
    upper
        .dir("a")
        .file("a/new", b"new")
        .file("a/.wh..wh..opq", b"")
        .file(".wh.gone", b"")
        .file(".wh.gonedir", b"")
        .file("fresh", b"fresh")
        // Whiteouts only apply to lower layers (image-spec): this layer's own entry stays.
        .file(".wh.fresh", b"");
    sb.apply(&upper.finish()).expect("upper");
    let mut names: Vec<_> = fs::read_dir(&sb.root)
        .expect("read root")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    names.sort();
    assert_eq!(names, ["a", "fresh", "keep"]);
    let a: Vec<_> = fs::read_dir(sb.root.join("a"))
        .expect("read a")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(a, ["new"]);
    sb.assert_untouched();
}

#[test]
fn overlay_mode_converts_whiteouts() {
    let sb = Sandbox::new();
    let mut l = Layer::new();
    l.dir("a")
        .file("a/.wh.x", b"")
        .file(".wh.gone", b"")
        .dir("b")
        .file("b/.wh..wh..opq", b"")
        .file("b/kept", b"kept")
        // Never accepted from an archive: only our own opaque markers set it.
        .pax(&[("SCHILY.xattr.trusted.overlay.opaque", b"y")])
        .dir("c");
    apply_bytes(&l.finish(), &sb.root, WhiteoutMode::Overlay).expect("apply");
    for p in ["a/x", "gone"] {
        let md = lstat(sb.root.join(p));
        assert!(md.file_type().is_char_device(), "{p} is a whiteout device");
        assert_eq!(md.rdev(), 0, "{p} is device 0/0");
    }
    let opaque = xattr::get(sb.root.join("b"), "trusted.overlay.opaque").expect("getxattr");
    assert_eq!(opaque.as_deref(), Some(&b"y"[..]));
    assert_eq!(
        xattr::get(sb.root.join("c"), "trusted.overlay.opaque").expect("getxattr"),
        None
    );
    assert_eq!(fs::read(sb.root.join("b/kept")).expect("kept"), b"kept");
    for entry in walk(&sb.root) {
        let name = entry
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert!(
            !name.starts_with(".wh."),
            "whiteout file {name} left behind"
        );
    }
    sb.assert_untouched();
}

#[test]
fn overlay_mode_hardlinks_must_stay_in_the_layer() {
    let sb = Sandbox::new();
    fs::write(sb.root.join("lower-file"), "x").expect("write");
    let mut l = Layer::new();
    l.file("f", b"data")
        .hardlink("ok", "f")
        .hardlink("bad", "elsewhere/file");
    let err = apply_bytes(&l.finish(), &sb.root, WhiteoutMode::Overlay).expect_err("bad link");
    let msg = err.to_string();
    assert!(
        msg.contains("sha256:test") && msg.contains("\"bad\"") && msg.contains("not in this layer"),
        "{msg}"
    );
    assert_eq!(
        lstat(sb.root.join("ok")).ino(),
        lstat(sb.root.join("f")).ino()
    );
    sb.assert_untouched();
}

#[test]
fn overlay_mode_recreated_directory_becomes_opaque() {
    let sb = Sandbox::new();
    let mut l = Layer::new();
    l.file(".wh.d", b"").dir("d").file("d/new", b"n");
    apply_bytes(&l.finish(), &sb.root, WhiteoutMode::Overlay).expect("apply");
    assert!(lstat(sb.root.join("d")).is_dir());
    assert_eq!(
        xattr::get(sb.root.join("d"), "trusted.overlay.opaque")
            .expect("getxattr")
            .as_deref(),
        Some(&b"y"[..])
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).expect("read_dir") {
        let p = e.expect("entry").path();
        if lstat(&p).is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

// ---- metadata ----------------------------------------------------------------------------

#[test]
fn ownership_modes_times_xattrs_and_special_files_are_kept() {
    let sb = Sandbox::new();
    let mut l = Layer::new();
    l.entry("sticky", EntryType::Directory, "", b"", |h| {
        h.set_mode(0o1777);
        h.set_mtime(1_000_000);
    })
    .entry("sgiddir", EntryType::Directory, "", b"", |h| {
        h.set_mode(0o2750);
        h.set_uid(42);
        h.set_gid(43);
    })
    .entry("sgiddir/inner", EntryType::Regular, "", b"in", |h| {
        h.set_gid(7);
    })
    .entry("suid", EntryType::Regular, "", b"#!/bin/sh\n", |h| {
        h.set_mode(0o4755);
        h.set_uid(1234);
        h.set_gid(5678);
        h.set_mtime(1_234_567_890);
    })
    .entry("sticky/file", EntryType::Regular, "", b"x", |h| {
        h.set_mode(0o600)
    })
    .entry("link", EntryType::Symlink, "suid", b"", |h| {
        h.set_uid(99);
        h.set_gid(98);
        h.set_mtime(1_111_111_111);
    })
    .entry("null", EntryType::Char, "", b"", |h| {
        h.set_mode(0o666);
        h.set_device_major(1).expect("major");
        h.set_device_minor(3).expect("minor");
    })
    .entry("blk", EntryType::Block, "", b"", |h| {
        h.set_mode(0o660);
        h.set_device_major(7).expect("major");
        h.set_device_minor(0).expect("minor");
    })
    .entry("fifo", EntryType::Fifo, "", b"", |h| h.set_mode(0o620))
    .pax(&[
        ("SCHILY.xattr.user.comment", b"hello"),
        ("SCHILY.xattr.security.capability", &CAP_NET_BIND),
        ("mtime", b"1500000000.25"),
    ])
    .entry("cap", EntryType::Regular, "", b"bin", |h| {
        h.set_mode(0o755);
        h.set_uid(3);
    })
    .entry("late", EntryType::Directory, "", b"", |h| {
        h.set_mtime(2_000_000)
    })
    .file("late/child", b"c");
    sb.apply(&l.finish()).expect("apply");

    let md = lstat(sb.root.join("sticky"));
    assert_eq!((md.mode() & 0o7777, md.mtime()), (0o1777, 1_000_000));
    let md = lstat(sb.root.join("sgiddir"));
    assert_eq!((md.mode() & 0o7777, md.uid(), md.gid()), (0o2750, 42, 43));
    // The archive's group wins over setgid inheritance.
    assert_eq!(lstat(sb.root.join("sgiddir/inner")).gid(), 7);
    let md = lstat(sb.root.join("suid"));
    assert_eq!(
        (md.mode() & 0o7777, md.uid(), md.gid(), md.mtime()),
        (0o4755, 1234, 5678, 1_234_567_890)
    );
    assert_eq!(lstat(sb.root.join("sticky/file")).mode() & 0o7777, 0o600);
    let md = lstat(sb.root.join("link"));
    assert!(md.file_type().is_symlink());
    assert_eq!((md.uid(), md.gid(), md.mtime()), (99, 98, 1_111_111_111));
    assert_eq!(
        fs::read_link(sb.root.join("link")).expect("readlink"),
        Path::new("suid")
    );
    let md = lstat(sb.root.join("null"));
    assert!(md.file_type().is_char_device());
    assert_eq!(
        (md.rdev(), md.mode() & 0o7777),
        (libc::makedev(1, 3), 0o666)
    );
    let md = lstat(sb.root.join("blk"));
    assert!(md.file_type().is_block_device());
    assert_eq!(md.rdev(), libc::makedev(7, 0));
    let md = lstat(sb.root.join("fifo"));
    assert!(md.file_type().is_fifo());
    assert_eq!(md.mode() & 0o7777, 0o620);
    let cap = sb.root.join("cap");
    let md = lstat(&cap);
    assert_eq!((md.uid(), md.mode() & 0o7777), (3, 0o755));
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_500_000_000, 250_000_000));
    assert_eq!(
        xattr::get(&cap, "user.comment").expect("get").as_deref(),
        Some(&b"hello"[..])
    );
    // Set after chown, which would have cleared it.
    assert_eq!(
        xattr::get(&cap, "security.capability")
            .expect("get")
            .as_deref(),
        Some(&CAP_NET_BIND[..])
    );
    // Directory times are set after everything inside was created.
    assert_eq!(lstat(sb.root.join("late")).mtime(), 2_000_000);
    sb.assert_untouched();
}

/// A version-2 file capability: cap_net_bind_service permitted and effective.
const CAP_NET_BIND: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00,
];

#[test]
fn directory_over_directory_merges_and_updates_metadata() {
    let sb = Sandbox::new();
    let mut l1 = Layer::new();
    l1.dir("d").file("d/lower", b"l");
    sb.apply(&l1.finish()).expect("l1");
    let mut l2 = Layer::new();
    l2.entry("d", EntryType::Directory, "", b"", |h| {
        h.set_mode(0o700);
        h.set_uid(5);
    })
    .file("d/upper", b"u")
    .dir("f");
    sb.apply(&l2.finish()).expect("l2");
    let md = lstat(sb.root.join("d"));
    assert_eq!((md.mode() & 0o7777, md.uid()), (0o700, 5));
    assert!(sb.root.join("d/lower").is_file());
    assert!(sb.root.join("d/upper").is_file());
    // A file replaces a directory and the other way round.
    let mut l3 = Layer::new();
    l3.file("d", b"now a file").dir("d/../x").file("f", b"file");
    sb.apply(&l3.finish()).expect("l3");
    assert_eq!(fs::read(sb.root.join("d")).expect("d"), b"now a file");
    assert_eq!(fs::read(sb.root.join("f")).expect("f"), b"file");
    sb.assert_untouched();
}

#[test]
fn dot_entries_leave_the_root_alone() {
    let sb = Sandbox::new();
    fs::set_permissions(&sb.root, fs::Permissions::from_mode(0o711)).expect("chmod");
    let mut l = Layer::new();
    l.entry(".", EntryType::Directory, "", b"", |h| h.set_mode(0o777))
        .entry("./", EntryType::Directory, "", b"", |h| h.set_mode(0o777))
        .entry("", EntryType::Symlink, "/etc", b"", |_| {})
        .file("./a", b"a");
    sb.apply(&l.finish()).expect("apply");
    assert_eq!(lstat(&sb.root).mode() & 0o7777, 0o711);
    assert!(lstat(&sb.root).is_dir());
    assert_eq!(fs::read(sb.root.join("a")).expect("a"), b"a");
    sb.assert_untouched();
}

#[test]
fn long_names_pax_and_gnu() {
    let sb = Sandbox::new();
    let long_dir = "d".repeat(120);
    let long_file = format!("{long_dir}/{}", "f".repeat(150));
    let mut b = ::tar::Builder::new(Vec::new());
    // GNU long names (`L`) and long link names (`K`), written by the tar crate.
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    b.append_data(&mut h, &long_dir, &b""[..]).expect("dir");
    let mut h = Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(4);
    b.append_data(&mut h, &long_file, &b"long"[..])
        .expect("file");
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "gnulink", &long_file)
        .expect("symlink");
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Link);
    h.set_size(0);
    h.set_mode(0o644);
    b.append_link(&mut h, "gnuhard", &long_file)
        .expect("hardlink");
    let mut l = Layer { b };
    // PAX path and linkpath override the header names.
    let pax_name = format!("{long_dir}/{}", "p".repeat(200));
    l.pax(&[("path", pax_name.as_bytes())])
        .file("ignored-short-name", b"pax")
        .pax(&[("path", b"paxlink"), ("linkpath", pax_name.as_bytes())])
        .symlink("ignored-link", "ignored-target");
    sb.apply(&l.finish()).expect("apply");
    assert_eq!(fs::read(sb.root.join(&long_file)).expect("gnu"), b"long");
    assert_eq!(
        fs::read_link(sb.root.join("gnulink")).expect("readlink"),
        Path::new(&long_file)
    );
    assert_eq!(
        lstat(sb.root.join("gnuhard")).ino(),
        lstat(sb.root.join(&long_file)).ino()
    );
    assert_eq!(fs::read(sb.root.join(&pax_name)).expect("pax"), b"pax");
    assert_eq!(
        fs::read_link(sb.root.join("paxlink")).expect("readlink"),
        Path::new(&pax_name)
    );
    assert!(!sb.root.join("ignored-short-name").exists());
    sb.assert_untouched();
}

// ---- malformed input ---------------------------------------------------------------------

#[test]
fn truncated_and_malformed_tars_fail_cleanly() {
    let mut l = Layer::new();
    l.dir("d")
        .file("d/big", &vec![7u8; 100_000])
        .file("after", b"a");
    let good = l.finish();
    // Cut inside a header, inside file data, inside padding.
    for cut in [100, 512 + 200, 2 * 512 + 50_000, 2 * 512 + 100_000 + 10] {
        let sb = Sandbox::new();
        let err = sb.apply(&good[..cut]).expect_err("truncated");
        assert!(
            matches!(err, UnpackError::Malformed { .. }),
            "cut {cut}: {err}"
        );
        assert_eq!(err.category(), Category::Invalid);
        sb.assert_untouched();
    }
    // A corrupted checksum, a bad size field, a zero block followed by garbage.
    let mut bad = good.clone();
    bad[0] ^= 0x55;
    let sb = Sandbox::new();
    assert!(matches!(sb.apply(&bad), Err(UnpackError::Malformed { .. })));
    let mut bad = good.clone();
    bad[512 + 124] = b'9';
    assert!(matches!(sb.apply(&bad), Err(UnpackError::Malformed { .. })));
    let mut zero_then_garbage = vec![0u8; 512];
    zero_then_garbage.extend_from_slice(&[1u8; 512]);
    assert!(matches!(
        sb.apply(&zero_then_garbage),
        Err(UnpackError::Malformed { .. })
    ));
    // Random bytes: an error, never a panic.
    let mut noise = vec![0u8; 64 << 10];
    let mut x: u32 = 12345;
    for b in noise.iter_mut() {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        *b = (x >> 16) as u8;
    }
    assert!(sb.apply(&noise).is_err());
    // An oversized PAX header is refused before it is buffered.
    let mut h = Header::new_ustar();
    h.set_entry_type(EntryType::XHeader);
    h.set_size(1 << 30);
    h.set_cksum();
    let mut huge = h.as_bytes().to_vec();
    huge.extend_from_slice(&[0u8; 4096]);
    let err = sb.apply(&huge).expect_err("huge pax");
    assert!(err.to_string().contains("limit"), "{err}");
    // Unsupported entry types are named.
    let mut l = Layer::new();
    l.entry("sparse", EntryType::GNUSparse, "", b"", |_| {});
    assert!(sb.apply(&l.finish()).is_err());
    sb.assert_untouched();
}

#[test]
fn archive_without_end_blocks_is_accepted() {
    // Go tools (and umoci) write these; containerd accepts them.
    let mut l = Layer::new();
    l.file("a", b"a");
    let full = l.finish();
    let sb = Sandbox::new();
    sb.apply(&full[..1024]).expect("no end blocks");
    assert_eq!(fs::read(sb.root.join("a")).expect("a"), b"a");
}

// ---- streams -----------------------------------------------------------------------------

/// Hashes and counts what passes through.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    n: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
}

fn sample_layer() -> Vec<u8> {
    let mut l = Layer::new();
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i * 7 + i / 1000) as u8)
        .collect();
    l.dir("bin")
        .file("bin/big", &big)
        .file("bin/small", b"s")
        .hardlink("bin/again", "bin/big");
    let mut tar = l.finish();
    // GNU tar pads to its 10 KiB record size after the end-of-archive blocks.
    tar.extend_from_slice(&[0u8; 8704]);
    tar
}

#[test]
fn the_whole_stream_is_consumed() {
    let tar = sample_layer();
    let sb = Sandbox::new();
    let mut reader = Hashing {
        inner: &tar[..],
        hash: Sha256::new(),
        n: 0,
    };
    let stats = apply_layer(
        &mut reader,
        &sb.root,
        &ApplyOptions {
            layer: "l",
            whiteouts: WhiteoutMode::Overlay,
        },
    )
    .expect("apply");
    assert_eq!(reader.n, tar.len() as u64);
    assert_eq!(reader.hash.finalize()[..], Sha256::digest(&tar)[..]);
    assert_eq!(stats.entries, 4);
    assert_eq!(stats.bytes, 3_000_001);
    assert_eq!(lstat(sb.root.join("bin/big")).len(), 3_000_000);
    assert_eq!(lstat(sb.root.join("bin/big")).nlink(), 2);
}

#[test]
fn gzip_and_zstd_round_trips() {
    let tar = sample_layer();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    let gz = gz.finish().expect("gzip finish");
    let zst = zstd::encode_all(&tar[..], 3).expect("zstd");
    for (blob, c) in [
        (&gz, Compression::Gzip),
        (&zst, Compression::Zstd),
        (&tar, Compression::None),
    ] {
        assert_eq!(Compression::detect(&blob[..8]), c);
        let sb = Sandbox::new();
        let mut reader = Hashing {
            inner: decompress(&blob[..], c).expect("decoder"),
            hash: Sha256::new(),
            n: 0,
        };
        apply_layer(
            &mut reader,
            &sb.root,
            &ApplyOptions {
                layer: "l",
                whiteouts: WhiteoutMode::Apply,
            },
        )
        .expect("apply");
        assert_eq!(
            reader.hash.finalize()[..],
            Sha256::digest(&tar)[..],
            "{c:?} diff id"
        );
        let expected = &tar[1024..1024 + 4096];
        let got = fs::read(sb.root.join("bin/big")).expect("big");
        assert_eq!(&got[..4096], expected);
    }
    // A corrupt gzip stream is an error of the layer, not a panic.
    let mut broken = gz.clone();
    let mid = broken.len() / 2;
    broken[mid] ^= 0xff;
    let sb = Sandbox::new();
    let r = decompress(&broken[..], Compression::Gzip).expect("decoder");
    assert!(apply_layer(
        r,
        &sb.root,
        &ApplyOptions {
            layer: "l",
            whiteouts: WhiteoutMode::Apply
        }
    )
    .is_err());
}

#[test]
fn media_types() {
    use Compression::*;
    for (mt, want) in [
        ("application/vnd.oci.image.layer.v1.tar", Some(None)),
        ("application/vnd.oci.image.layer.v1.tar+gzip", Some(Gzip)),
        ("application/vnd.oci.image.layer.v1.tar+zstd", Some(Zstd)),
        (
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            Some(Gzip),
        ),
        (
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            Some(Gzip),
        ),
        (
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            Some(Gzip),
        ),
        ("application/vnd.docker.image.rootfs.diff.tar", Some(None)),
        (
            "application/vnd.docker.image.rootfs.diff.tar.zstd",
            Some(Zstd),
        ),
        (
            "application/vnd.oci.image.layer.v1.tar+gzip; x=y",
            Some(Gzip),
        ),
        ("application/vnd.oci.image.config.v1+json", Option::None),
        ("application/octet-stream", Option::None),
    ] {
        assert_eq!(Compression::from_media_type(mt), want, "{mt}");
    }
    assert_eq!(Compression::detect(&[0x1f, 0x8b, 8]), Gzip);
    assert_eq!(Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd]), Zstd);
    assert_eq!(Compression::detect(b"bin/\0\0"), None);
    assert_eq!(Compression::detect(&[]), None);
}

#[test]
fn missing_target_directory_is_an_error() {
    let sb = Sandbox::new();
    let mut l = Layer::new();
    l.file("a", b"a");
    let err = apply_bytes(&l.finish(), &sb.root.join("nope"), WhiteoutMode::Apply)
        .expect_err("missing dest");
    assert!(matches!(err, UnpackError::Target { .. }));
}

// ---- overlayfs ---------------------------------------------------------------------------

/// Unmounts on drop, also when the test fails.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Relative path, kind and content of everything below `root`, sorted.
fn listing(root: &Path) -> Vec<(String, &'static str, Vec<u8>)> {
    let mut out: Vec<_> = walk(root)
        .into_iter()
        .map(|p| {
            let md = lstat(&p);
            let rel = p
                .strip_prefix(root)
                .expect("below root")
                .to_string_lossy()
                .into_owned();
            let (kind, content) = if md.is_dir() {
                ("dir", Vec::new())
            } else if md.file_type().is_symlink() {
                let t = fs::read_link(&p).expect("readlink");
                ("symlink", t.to_string_lossy().into_owned().into_bytes())
            } else if md.is_file() {
                ("file", fs::read(&p).expect("read"))
            } else {
                ("other", Vec::new())
            };
            (rel, kind, content)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn overlay_snapshots_mount_to_the_same_tree_as_applying() {
    let sb = Sandbox::new();
    let mut lower = Layer::new();
    lower
        .dir("a")
        .file("a/old", b"old")
        .dir("a/sub")
        .file("a/sub/deep", b"deep")
        .file("gone", b"gone")
        .dir("gonedir")
        .file("gonedir/f", b"f")
        .dir("b")
        .file("b/x", b"x")
        .file("b/y", b"y")
        .dir("d")
        .file("d/old", b"old")
        .symlink("l", "b/y")
        .file("keep", b"keep");
    let mut upper = Layer::new();
    upper
        .dir("a")
        .file("a/new", b"new")
        .file("a/.wh..wh..opq", b"")
        .file(".wh.gone", b"")
        .file(".wh.gonedir", b"")
        .file("b/.wh.x", b"")
        .file(".wh.d", b"")
        .dir("d")
        .file("d/new", b"new")
        .file(".wh.l", b"")
        .file("fresh", b"fresh");
    let (lower, upper) = (lower.finish(), upper.finish());

    let flat = sb.root.join("flat");
    let (l0, l1, merged) = (
        sb.root.join("l0"),
        sb.root.join("l1"),
        sb.root.join("merged"),
    );
    for d in [&flat, &l0, &l1, &merged] {
        fs::create_dir(d).expect("mkdir");
    }
    apply_bytes(&lower, &flat, WhiteoutMode::Apply).expect("flat lower");
    apply_bytes(&upper, &flat, WhiteoutMode::Apply).expect("flat upper");
    apply_bytes(&lower, &l0, WhiteoutMode::Overlay).expect("snapshot lower");
    apply_bytes(&upper, &l1, WhiteoutMode::Overlay).expect("snapshot upper");

    let opts = format!("lowerdir={}:{}", l1.display(), l0.display());
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(opts.as_str()),
    )
    .expect("mount overlay");
    let _guard = Mounted(merged.clone());
    let want = listing(&flat);
    assert_eq!(listing(&merged), want);
    let names: Vec<_> = want.iter().map(|(p, _, _)| p.as_str()).collect();
    assert_eq!(
        names,
        ["a", "a/new", "b", "b/y", "d", "d/new", "fresh", "keep"]
    );
}

#[test]
fn names_longer_than_path_max_are_refused() {
    let sb = Sandbox::new();
    let deep = "a/".repeat(3000);
    let mut l = Layer::new();
    l.pax(&[("path", deep.as_bytes())]).file("short", b"x");
    let err = sb.apply(&l.finish()).expect_err("too long");
    assert!(err.to_string().contains("PATH_MAX"), "{err}");
    sb.assert_untouched();
}
