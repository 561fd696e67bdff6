//! Unit tests of the volume store and the copy-up, on temp dirs (as root: owners, device
//! nodes, whiteouts and trusted xattrs need it).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{lchown, symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};

use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};
use sha2::Digest as _;

use super::*;

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn names_follow_dockers_rules() {
    for ok in ["ab", "a.b-c_d", "0x", "My_Vol.1", "x-", "1.."] {
        validate_name(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    validate_name(&"a".repeat(NAME_MAX)).expect("longest name");
    for bad in [
        "", "a", "-ab", ".ab", "_ab", "a/b", "..", "../x", "a b", "ä1", "ab\0", "ab\n", "/abs",
    ] {
        let e = validate_name(bad).expect_err(bad);
        assert_eq!(e.category(), Category::Invalid, "{bad}");
        assert!(e.to_string().contains("invalid volume name"), "{e}");
    }
    let e = validate_name("a").unwrap_err().to_string();
    assert!(e.contains("too short"), "{e}");
    let e = validate_name("a/b").unwrap_err().to_string();
    assert!(e.contains("[a-zA-Z0-9][a-zA-Z0-9_.-]"), "{e}");
    let e = validate_name(&"a".repeat(NAME_MAX + 1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("too long"), "{e}");
}

#[test]
fn create_lays_out_the_volume_and_is_idempotent() {
    let t = tempdir();
    let store = VolumeStore::open(t.path()).unwrap();
    let dir = t.path().join("volumes");
    assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o7777, 0o701);

    let v = store.create("data", labels(&[("a", "1")])).unwrap();
    assert_eq!(v.name, "data");
    assert_eq!(v.path, dir.join("data/_data"));
    assert!(v.path.is_absolute());
    assert_eq!(v.labels, labels(&[("a", "1")]));
    let data = fs::metadata(&v.path).unwrap();
    assert!(data.is_dir());
    assert_eq!(data.mode() & 0o7777, 0o755);
    let record: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("data/volume.json")).unwrap()).unwrap();
    assert_eq!(record["name"], "data");
    assert_eq!(record["labels"]["a"], "1");

    // Existing: returned unchanged, labels included.
    let again = store.create("data", labels(&[("b", "2")])).unwrap();
    assert_eq!(again, v);
    assert_eq!(store.get("data").unwrap(), Some(v.clone()));
    assert_eq!(store.get("other").unwrap(), None);
    assert!(store.get("../etc").is_err());
    // Nothing but the volume and the lock file.
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, [".lock", "data"]);
}

#[test]
fn labels_are_bounded() {
    let t = tempdir();
    let store = VolumeStore::open(t.path()).unwrap();
    let e = store.create("vol", labels(&[("", "x")])).unwrap_err();
    assert!(matches!(e, VolumeError::InvalidLabel { .. }), "{e}");
    let big = "x".repeat(LABEL_BYTES_MAX);
    let e = store.create("vol", labels(&[("k", &big)])).unwrap_err();
    assert_eq!(e.category(), Category::Invalid);
    assert!(e.to_string().contains("volume vol"), "{e}");
    let many: BTreeMap<String, String> = (0..=LABELS_MAX)
        .map(|i| (format!("k{i}"), String::new()))
        .collect();
    assert!(store.create("vol", many).is_err());
    assert_eq!(store.list().unwrap(), vec![]);
}

#[test]
fn concurrent_creators_get_one_volume() {
    let t = tempdir();
    let root = t.path().to_path_buf();
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let root = root.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let store = VolumeStore::open(&root).unwrap();
                barrier.wait();
                let shared = store
                    .create("shared", labels(&[("creator", &i.to_string())]))
                    .unwrap();
                let own = store.create(&format!("own{i}"), BTreeMap::new()).unwrap();
                (shared, own)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let first = &results[0].0;
    for (shared, _) in &results {
        assert_eq!(shared, first, "every creator sees the same volume");
    }
    let store = VolumeStore::open(&root).unwrap();
    let names: Vec<String> = store.list().unwrap().into_iter().map(|v| v.name).collect();
    let mut expected: Vec<String> = (0..8).map(|i| format!("own{i}")).collect();
    expected.push("shared".into());
    expected.sort();
    assert_eq!(names, expected);
}

#[test]
fn list_skips_leftovers_foreign_and_unreadable_entries() {
    let t = tempdir();
    let store = VolumeStore::open(t.path()).unwrap();
    store.create("good", BTreeMap::new()).unwrap();
    let dir = store.dir().to_path_buf();
    // A crashed create and a crashed remove of a process that no longer exists.
    fs::create_dir_all(dir.join(".new-4000000000-1/_data")).unwrap();
    fs::create_dir_all(dir.join(".rm-4000000000-2/_data")).unwrap();
    fs::create_dir_all(dir.join("bad name")).unwrap();
    fs::create_dir_all(dir.join("broken")).unwrap();
    fs::write(dir.join("broken/volume.json"), "{not json").unwrap();
    fs::create_dir_all(dir.join("liar")).unwrap();
    fs::write(
        dir.join("liar/volume.json"),
        r#"{"name":"good","created":"2024-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    let names: Vec<String> = store.list().unwrap().into_iter().map(|v| v.name).collect();
    assert_eq!(names, ["good"]);
    let e = store.get("broken").unwrap_err();
    assert!(matches!(e, VolumeError::BadRecord { .. }), "{e}");
    assert!(store.get("liar").is_err());

    // The next mutation removes the dead processes' leftovers.
    store.create("next", BTreeMap::new()).unwrap();
    assert!(!dir.join(".new-4000000000-1").exists());
    assert!(!dir.join(".rm-4000000000-2").exists());
    // A directory without a record is not ours to take over.
    fs::create_dir_all(dir.join("orphan")).unwrap();
    let e = store.create("orphan", BTreeMap::new()).unwrap_err();
    assert!(e.to_string().contains("without a record"), "{e}");
    assert!(dir.join("orphan").is_dir());
}

/// Writes `containers/<id>/{container.json,spec.json}` with bind mounts from `sources`.
fn fake_container(root: &Path, id: &str, name: &str, sources: &[&str]) {
    let dir = root.join("containers").join(id);
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("container.json"),
        serde_json::json!({ "id": id, "name": name }).to_string(),
    )
    .unwrap();
    let mut mounts = vec![serde_json::json!({
        "destination": "/proc", "type": "proc", "source": "proc"
    })];
    for (i, s) in sources.iter().enumerate() {
        mounts.push(serde_json::json!({
            "destination": format!("/m{i}"),
            "type": "bind",
            "source": s,
            "options": ["rbind", "rw", "rprivate"],
        }));
    }
    fs::write(
        dir.join("spec.json"),
        serde_json::json!({ "ociVersion": "1.2.0", "mounts": mounts }).to_string(),
    )
    .unwrap();
}

#[test]
fn remove_is_refused_while_a_container_mounts_the_volume() {
    let t = tempdir();
    let root = t.path();
    let store = VolumeStore::open(root).unwrap();
    let used = store.create("used", BTreeMap::new()).unwrap();
    let sub = store.create("subdir", BTreeMap::new()).unwrap();
    store.create("odd", BTreeMap::new()).unwrap();
    let linked = store.create("linked", BTreeMap::new()).unwrap();
    store.create("used2", BTreeMap::new()).unwrap();
    store.create("free", BTreeMap::new()).unwrap();
    let id1 = "a".repeat(64);
    let id2 = "b".repeat(64);
    fake_container(root, &id1, "web", &[used.path.to_str().unwrap(), "/srv"]);
    // Below the data dir, a non-normalized spelling, and a host symlink into a volume.
    fs::create_dir_all(sub.path.join("deep")).unwrap();
    let odd_spelling = format!(
        "{}//volumes/./x/../odd/_data/",
        root.display().to_string().trim_end_matches('/')
    );
    let link = root.join("link-to-volume");
    symlink(&linked.path, &link).unwrap();
    fake_container(
        root,
        &id2,
        "worker",
        &[
            sub.path.join("deep").to_str().unwrap(),
            &odd_spelling,
            link.to_str().unwrap(),
            used.path.to_str().unwrap(),
        ],
    );
    // A container being created: record but no spec yet.
    fs::create_dir_all(root.join("containers").join("c".repeat(64))).unwrap();

    let users = store.users().unwrap();
    assert_eq!(
        users.get("used").unwrap(),
        &vec![
            format!("web ({})", &id1[..12]),
            format!("worker ({})", &id2[..12])
        ]
    );
    for name in ["subdir", "odd", "linked"] {
        assert_eq!(
            users.get(name),
            Some(&vec![format!("worker ({})", &id2[..12])]),
            "{name}"
        );
    }
    assert!(
        !users.contains_key("used2"),
        "used is not a prefix of used2"
    );
    assert!(!users.contains_key("free"));

    let e = store.remove("used").unwrap_err();
    assert_eq!(e.category(), Category::Conflict);
    let msg = e.to_string();
    assert!(
        msg.contains("in use") && msg.contains("web") && msg.contains("worker"),
        "{msg}"
    );
    assert!(store.get("used").unwrap().is_some());
    store.remove("free").unwrap();
    store.remove("used2").unwrap();
    assert!(store.get("free").unwrap().is_none());
    assert!(!store.dir().join("free").exists());
    let e = store.remove("free").unwrap_err();
    assert!(matches!(e, VolumeError::NotFound { .. }), "{e}");
    assert_eq!(e.category(), Category::NotFound);

    // Once the container is gone the volume can go.
    fs::remove_dir_all(root.join("containers").join(&id1)).unwrap();
    fs::remove_dir_all(root.join("containers").join(&id2)).unwrap();
    store.remove("used").unwrap();
}

#[test]
fn prune_removes_unused_anonymous_volumes_or_all_unused_ones() {
    let t = tempdir();
    let root = t.path();
    let store = VolumeStore::open(root).unwrap();
    let anon = labels(&[(ANONYMOUS_LABEL, "")]);
    let a1 = store.create("anon1", anon.clone()).unwrap();
    let a2 = store.create("anon2", anon).unwrap();
    let named = store.create("named", BTreeMap::new()).unwrap();
    store.create("named2", BTreeMap::new()).unwrap();
    fs::write(a1.path.join("f"), vec![0u8; 1000]).unwrap();
    fs::create_dir(a1.path.join("d")).unwrap();
    fs::write(a1.path.join("d/g"), vec![0u8; 234]).unwrap();
    fs::hard_link(a1.path.join("f"), a1.path.join("f2")).unwrap();
    symlink("/etc/passwd", a1.path.join("l")).unwrap();
    fake_container(
        root,
        &"d".repeat(64),
        "keeper",
        &[a2.path.to_str().unwrap()],
    );
    fake_container(
        root,
        &"e".repeat(64),
        "keeper2",
        &[named.path.to_str().unwrap()],
    );

    let report = store.prune(false).unwrap();
    assert_eq!(report.removed, ["anon1"]);
    assert_eq!(
        report.reclaimed, 1234,
        "hardlinks once, symlinks not followed"
    );
    let report = store.prune(true).unwrap();
    assert_eq!(report.removed, ["named2"]);
    assert_eq!(report.reclaimed, 0);
    let left: Vec<String> = store.list().unwrap().into_iter().map(|v| v.name).collect();
    assert_eq!(left, ["anon2", "named"]);
    assert_eq!(store.prune(true).unwrap(), PruneReport::default());
}

#[test]
fn remove_waits_for_no_copy_in_progress() {
    let t = tempdir();
    let store = VolumeStore::open(t.path()).unwrap();
    store.create("busy", BTreeMap::new()).unwrap();
    // What populate holds while copying.
    let held = store
        .lock_volume("busy", &store.dir().join("busy"))
        .unwrap();
    let e = store.remove("busy").unwrap_err();
    assert!(matches!(e, VolumeError::Busy { .. }), "{e}");
    assert_eq!(e.category(), Category::Conflict);
    assert_eq!(store.prune(true).unwrap().removed, Vec::<String>::new());
    drop(held);
    store.remove("busy").unwrap();
    let e = store
        .lock_volume("busy", &store.dir().join("busy"))
        .unwrap_err();
    assert!(matches!(e, VolumeError::NotFound { .. }), "{e}");
}

// ---- copy-up --------------------------------------------------------------------------

const MTIME: i64 = 1_704_067_200;

/// Snapshot dirs by hand, in overlay form, under `<root>/snapshots/sha256/`.
struct Layers {
    root: PathBuf,
    ids: Vec<String>,
}

impl Layers {
    fn new(root: &Path) -> Layers {
        Layers {
            root: root.to_path_buf(),
            ids: Vec::new(),
        }
    }

    /// A new layer on top; returns its directory.
    fn add(&mut self) -> PathBuf {
        let hex = hex::encode(sha2::Sha256::digest(
            format!("layer {} of {}", self.ids.len(), self.root.display()).as_bytes(),
        ));
        let dir = self.root.join("snapshots/sha256").join(&hex);
        fs::create_dir_all(&dir).unwrap();
        self.ids.push(format!("sha256:{hex}"));
        dir
    }
}

fn set_times(path: &Path, secs: i64) {
    let ts = Timespec {
        tv_sec: secs,
        tv_nsec: 5,
    };
    rustix::fs::utimensat(
        CWD,
        path,
        &Timestamps {
            last_access: ts,
            last_modification: ts,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

fn file(layer: &Path, rel: &str, content: &str, mode: u32, uid: u32, gid: u32) {
    let p = layer.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, content).unwrap();
    lchown(&p, Some(uid), Some(gid)).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    set_times(&p, MTIME);
}

fn dir(layer: &Path, rel: &str, mode: u32, uid: u32, gid: u32) {
    let p = layer.join(rel);
    fs::create_dir_all(&p).unwrap();
    lchown(&p, Some(uid), Some(gid)).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

fn whiteout(layer: &Path, rel: &str) {
    let p = layer.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    nix::sys::stat::mknod(
        &p,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        0,
    )
    .unwrap();
}

fn opaque(layer: &Path, rel: &str) {
    let p = layer.join(rel);
    fs::create_dir_all(&p).unwrap();
    xattr::set(&p, "trusted.overlay.opaque", b"y").unwrap();
}

fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    n.sort();
    n
}

fn record(store: &VolumeStore, name: &str) -> serde_json::Value {
    serde_json::from_slice(&fs::read(store.dir().join(name).join("volume.json")).unwrap()).unwrap()
}

/// Two layers: a base with content under /data and a top that whites out, makes opaque,
/// adds and replaces.
fn two_layer_image(root: &Path) -> Layers {
    let mut layers = Layers::new(root);
    let base = layers.add();
    dir(&base, "data", 0o750, 999, 998);
    file(&base, "data/a.txt", "alpha\n", 0o640, 1000, 1001);
    xattr::set(base.join("data/a.txt"), "user.origin", b"image").unwrap();
    file(&base, "data/setuid", "#!/bin/sh\n", 0o4755, 0, 0);
    file(&base, "data/sub/b.txt", "beta\n", 0o644, 0, 0);
    dir(&base, "data/sub", 0o700, 1000, 1000);
    set_times(&base.join("data/sub"), MTIME + 60);
    file(&base, "data/hidden.txt", "whited out\n", 0o644, 0, 0);
    file(&base, "data/replaced.txt", "old\n", 0o644, 0, 0);
    file(
        &base,
        "data/opq/lower.txt",
        "hidden by opaque\n",
        0o644,
        0,
        0,
    );
    file(&base, "data/h1", "hardlinked\n", 0o644, 0, 0);
    fs::hard_link(base.join("data/h1"), base.join("data/h2")).unwrap();
    symlink("/etc/passwd", base.join("data/abs-link")).unwrap();
    lchown(base.join("data/abs-link"), Some(1000), Some(1000)).unwrap();
    symlink("../../../../../../etc", base.join("data/climb")).unwrap();
    nix::unistd::mkfifo(
        &base.join("data/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    file(
        &base,
        "etc/app.conf",
        "not under the mount path\n",
        0o644,
        0,
        0,
    );

    let top = layers.add();
    whiteout(&top, "data/hidden.txt");
    file(&top, "data/replaced.txt", "new\n", 0o600, 0, 0);
    opaque(&top, "data/opq");
    file(&top, "data/opq/upper.txt", "kept\n", 0o644, 0, 0);
    file(&top, "data/new.txt", "top\n", 0o644, 0, 0);
    // The merged /data's metadata comes from the top layer's /data.
    dir(&top, "data", 0o770, 999, 998);
    set_times(&top.join("data"), MTIME + 120);
    layers
}

#[test]
fn populate_copies_the_merged_image_directory_once() {
    let t = tempdir();
    let root = t.path();
    let layers = two_layer_image(root);
    let store = VolumeStore::open(root).unwrap();
    let v = store.create("db", BTreeMap::new()).unwrap();
    assert!(store
        .populate_from_image(&v, root, &layers.ids, "/data")
        .unwrap());
    let d = &v.path;
    assert_eq!(
        names(d),
        [
            "a.txt",
            "abs-link",
            "climb",
            "fifo",
            "h1",
            "h2",
            "new.txt",
            "opq",
            "replaced.txt",
            "setuid",
            "sub"
        ]
    );
    // Owner, mode, times, xattrs.
    let a = fs::metadata(d.join("a.txt")).unwrap();
    assert_eq!((a.uid(), a.gid(), a.mode() & 0o7777), (1000, 1001, 0o640));
    assert_eq!((a.mtime(), a.mtime_nsec()), (MTIME, 5));
    assert_eq!(fs::read_to_string(d.join("a.txt")).unwrap(), "alpha\n");
    assert_eq!(
        xattr::get(d.join("a.txt"), "user.origin")
            .unwrap()
            .as_deref(),
        Some(&b"image"[..])
    );
    assert_eq!(
        fs::metadata(d.join("setuid")).unwrap().mode() & 0o7777,
        0o4755
    );
    let sub = fs::metadata(d.join("sub")).unwrap();
    assert_eq!((sub.uid(), sub.mode() & 0o7777), (1000, 0o700));
    assert_eq!(sub.mtime(), MTIME + 60);
    assert_eq!(fs::read_to_string(d.join("sub/b.txt")).unwrap(), "beta\n");
    // The top layer wins; whiteouts and opaque directories hide lower content.
    assert_eq!(fs::read_to_string(d.join("replaced.txt")).unwrap(), "new\n");
    assert_eq!(names(&d.join("opq")), ["upper.txt"]);
    assert_eq!(
        xattr::get(d.join("opq"), "trusted.overlay.opaque").unwrap(),
        None
    );
    // Symlinks are copied as symlinks, never followed onto the host.
    let link = fs::symlink_metadata(d.join("abs-link")).unwrap();
    assert!(link.file_type().is_symlink());
    assert_eq!((link.uid(), link.gid()), (1000, 1000));
    assert_eq!(
        fs::read_link(d.join("abs-link")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert!(fs::symlink_metadata(d.join("climb"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(fs::symlink_metadata(d.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(
        fs::metadata(d.join("h1")).unwrap().ino(),
        fs::metadata(d.join("h2")).unwrap().ino(),
        "hardlinks stay hardlinks"
    );
    // The volume's own directory takes the image directory's owner, mode and times.
    let top = fs::metadata(d).unwrap();
    assert_eq!(
        (top.uid(), top.gid(), top.mode() & 0o7777),
        (999, 998, 0o770)
    );
    assert_eq!(top.mtime(), MTIME + 120);
    // No staging left; the marker is set.
    assert_eq!(names(&store.dir().join("db")), ["_data", "volume.json"]);
    assert_eq!(record(&store, "db")["populated"]["from"], "/data");

    // Second use: nothing happens, even after the volume was emptied.
    fs::write(d.join("new.txt"), "changed by the app\n").unwrap();
    assert!(!store
        .populate_from_image(&v, root, &layers.ids, "/data")
        .unwrap());
    assert_eq!(
        fs::read_to_string(d.join("new.txt")).unwrap(),
        "changed by the app\n"
    );
    for name in names(d) {
        let p = d.join(name);
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            fs::remove_dir_all(&p).unwrap();
        } else {
            fs::remove_file(&p).unwrap();
        }
    }
    assert!(!store
        .populate_from_image(&v, root, &layers.ids, "/data")
        .unwrap());
    assert!(names(d).is_empty());
}

#[test]
fn a_volume_with_content_is_never_overwritten() {
    let t = tempdir();
    let root = t.path();
    let layers = two_layer_image(root);
    let store = VolumeStore::open(root).unwrap();
    let v = store.create("mine", BTreeMap::new()).unwrap();
    fs::write(v.path.join("a.txt"), "the user's\n").unwrap();
    assert!(!store
        .populate_from_image(&v, root, &layers.ids, "/data")
        .unwrap());
    assert_eq!(names(&v.path), ["a.txt"]);
    assert_eq!(
        fs::read_to_string(v.path.join("a.txt")).unwrap(),
        "the user's\n"
    );
    assert!(record(&store, "mine").get("populated").is_none());
}

#[test]
fn missing_or_non_directory_paths_copy_nothing_and_leave_no_marker() {
    let t = tempdir();
    let root = t.path();
    let layers = two_layer_image(root);
    let store = VolumeStore::open(root).unwrap();
    let v = store.create("later", BTreeMap::new()).unwrap();
    for path in ["/nope", "/data/a.txt", "/data/hidden.txt", "/data/a.txt/x"] {
        assert!(
            !store
                .populate_from_image(&v, root, &layers.ids, path)
                .unwrap(),
            "{path}"
        );
        assert!(names(&v.path).is_empty(), "{path}");
    }
    assert!(record(&store, "later").get("populated").is_none());
    // A later mount where the image has content still fills it.
    assert!(store
        .populate_from_image(&v, root, &layers.ids, "/data/sub")
        .unwrap());
    assert_eq!(names(&v.path), ["b.txt"]);
}

#[test]
fn the_mount_path_resolves_symlinks_inside_the_image_only() {
    let t = tempdir();
    let root = t.path();
    // Host content the image's symlinks name.
    let host = t.path().join("host-secret");
    fs::create_dir_all(&host).unwrap();
    fs::write(host.join("secret"), "host only\n").unwrap();

    let mut layers = Layers::new(root);
    let base = layers.add();
    file(&base, "run/app/pid", "1\n", 0o644, 0, 0);
    fs::create_dir_all(base.join("var")).unwrap();
    symlink("/run", base.join("var/run")).unwrap();
    symlink("../../../../../run", base.join("var/climb")).unwrap();
    symlink(&host, base.join("hostdir")).unwrap();
    symlink("loop2", base.join("loop1")).unwrap();
    symlink("loop1", base.join("loop2")).unwrap();
    let top = layers.add();
    // A symlink in an upper layer into a directory of a lower one.
    symlink("var/run/app", top.join("app")).unwrap();

    let store = VolumeStore::open(root).unwrap();
    for (i, path) in ["/var/run/app", "/var/climb/app", "/app", "/var/../app/"]
        .iter()
        .enumerate()
    {
        let v = store.create(&format!("v{i}"), BTreeMap::new()).unwrap();
        assert!(
            store
                .populate_from_image(&v, root, &layers.ids, path)
                .unwrap(),
            "{path}"
        );
        assert_eq!(names(&v.path), ["pid"], "{path}");
    }
    // An absolute symlink to a host directory is resolved inside the image: not there.
    let v = store.create("host", BTreeMap::new()).unwrap();
    assert!(!store
        .populate_from_image(&v, root, &layers.ids, "/hostdir")
        .unwrap());
    assert!(names(&v.path).is_empty());
    let e = store
        .populate_from_image(&v, root, &layers.ids, "/loop1/x")
        .unwrap_err();
    assert_eq!(e.category(), Category::Invalid, "{e}");
    assert!(e.to_string().contains("volume host"), "{e}");
    assert!(names(&v.path).is_empty());
}

#[test]
fn bad_inputs_are_refused_naming_the_volume() {
    let t = tempdir();
    let root = t.path();
    let layers = two_layer_image(root);
    let store = VolumeStore::open(root).unwrap();
    let v = store.create("vol", BTreeMap::new()).unwrap();
    let e = store
        .populate_from_image(&v, root, &layers.ids, "data")
        .unwrap_err();
    assert!(matches!(e, VolumeError::InvalidMountPath { .. }), "{e}");
    let e = store
        .populate_from_image(&v, root, &["sha256:zz".to_string()], "/data")
        .unwrap_err();
    assert!(matches!(e, VolumeError::LayerInvalid { .. }), "{e}");
    let gone = format!("sha256:{}", "0".repeat(64));
    let e = store
        .populate_from_image(&v, root, std::slice::from_ref(&gone), "/data")
        .unwrap_err();
    assert!(matches!(e, VolumeError::LayerMissing { .. }), "{e}");
    assert_eq!(e.category(), Category::NotFound);
    assert!(
        e.to_string().contains(&gone) && e.to_string().contains("volume vol"),
        "{e}"
    );
    // A volume that does not exist (removed since the caller got it).
    let mut ghost = v.clone();
    ghost.name = "ghost".into();
    let e = store
        .populate_from_image(&ghost, root, &layers.ids, "/data")
        .unwrap_err();
    assert!(matches!(e, VolumeError::NotFound { .. }), "{e}");
    // No layers at all: an empty image has nothing to copy.
    assert!(!store.populate_from_image(&v, root, &[], "/data").unwrap());
    assert!(!store.populate_from_image(&v, root, &[], "/").unwrap());
    assert!(record(&store, "vol").get("populated").is_none());
    // Once populated (or not empty), the layers are not even looked at.
    assert!(store
        .populate_from_image(&v, root, &layers.ids, "/data")
        .unwrap());
    assert!(!store
        .populate_from_image(&v, root, std::slice::from_ref(&gone), "/data")
        .unwrap());
}

#[test]
fn a_failed_copy_leaves_the_volume_empty_and_unmarked() {
    let t = tempdir();
    let root = t.path();
    let mut layers = Layers::new(root);
    let base = layers.add();
    file(&base, "deep/first.txt", "x\n", 0o644, 0, 0);
    let mut p = base.join("deep");
    for _ in 0..populate::MAX_DEPTH + 2 {
        p = p.join("d");
    }
    fs::create_dir_all(&p).unwrap();
    let store = VolumeStore::open(root).unwrap();
    let v = store.create("deep", BTreeMap::new()).unwrap();
    let e = store
        .populate_from_image(&v, root, &layers.ids, "/deep")
        .unwrap_err();
    assert!(matches!(e, VolumeError::Copy { .. }), "{e}");
    assert_eq!(e.category(), Category::Invalid, "{e}");
    assert!(e.to_string().contains("/deep/d/d"), "{e}");
    assert!(names(&v.path).is_empty());
    assert_eq!(names(&store.dir().join("deep")), ["_data", "volume.json"]);
    // A staging directory of a dead process is cleaned up by the next populate.
    fs::create_dir_all(store.dir().join("deep/.populate-4000000000-9/x")).unwrap();
    assert!(store
        .populate_from_image(&v, root, &layers.ids, "/deep/d/d/d")
        .unwrap());
    assert_eq!(names(&store.dir().join("deep")), ["_data", "volume.json"]);
}

#[test]
fn device_nodes_are_copied_and_sockets_skipped() {
    let t = tempdir();
    let root = t.path();
    let mut layers = Layers::new(root);
    let base = layers.add();
    fs::create_dir_all(base.join("dev")).unwrap();
    nix::sys::stat::mknod(
        &base.join("dev/null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    fs::set_permissions(base.join("dev/null"), fs::Permissions::from_mode(0o666)).unwrap();
    // Bound at a short path (sun_path holds 108 bytes), then moved into the layer.
    let sock = std::os::unix::net::UnixListener::bind(t.path().join("s")).unwrap();
    fs::rename(t.path().join("s"), base.join("dev/sock")).unwrap();
    let store = VolumeStore::open(root).unwrap();
    let v = store.create("dev", BTreeMap::new()).unwrap();
    assert!(store
        .populate_from_image(&v, root, &layers.ids, "/dev")
        .unwrap());
    drop(sock);
    assert_eq!(names(&v.path), ["null"]);
    let m = fs::symlink_metadata(v.path.join("null")).unwrap();
    assert!(m.file_type().is_char_device());
    assert_eq!(m.rdev(), nix::sys::stat::makedev(1, 3));
    assert_eq!(m.mode() & 0o7777, 0o666);
}

#[test]
fn an_empty_image_directory_still_gives_its_owner_and_mode() {
    let t = tempdir();
    let root = t.path();
    let mut layers = Layers::new(root);
    let base = layers.add();
    dir(&base, "var/lib/pg", 0o700, 70, 70);
    let store = VolumeStore::open(root).unwrap();
    let v = store.create("pg", BTreeMap::new()).unwrap();
    assert!(store
        .populate_from_image(&v, root, &layers.ids, "/var/lib/pg")
        .unwrap());
    let m = fs::metadata(&v.path).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (70, 70, 0o700));
    assert!(names(&v.path).is_empty());
}

#[test]
fn errors_have_categories() {
    let io = || io::Error::from_raw_os_error(libc::ENOSPC);
    let e = VolumeError::Copy {
        name: "v".into(),
        image_path: "/x".into(),
        path: "/p".into(),
        source: io(),
    };
    assert_eq!(e.category(), Category::Internal);
    assert!(
        e.to_string()
            .starts_with("volume v: copy /x from the image into /p"),
        "{e}"
    );
    let e = VolumeError::Io {
        name: "v".into(),
        action: "open",
        path: "/p".into(),
        source: io(),
    };
    assert_eq!(e.category(), Category::Internal);
    assert_eq!(
        crate::fsutil::clean_path(Path::new("/a//b/./c/../../d/")),
        PathBuf::from("/a/d")
    );
    assert_eq!(
        crate::fsutil::clean_path(Path::new("/../../x")),
        PathBuf::from("/x")
    );
}
