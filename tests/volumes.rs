//! Named volumes for real (root): the `dockmaster volume` commands, a volume mounted by
//! containers (`run -v <root>/volumes/NAME/_data:/data`) and refused removal while one uses
//! it, and Docker's copy-up from an imported image's layer snapshots.
mod support;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use dockmaster::volume::{VolumeStore, ANONYMOUS_LABEL};
use support::containers::{Host, BUSYBOX};
use support::layer::{Node, NodeKind, Tree};
use support::{busybox_rootfs, multilayer_whiteouts, write_oci_layout, Image, ImageBuilder};
use support::{LayerBuilder, Meta, TempRoot};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `dockmaster --root R ARGS` with `stdin` fed in.
fn run_in(root: &TempRoot, args: &[&str], stdin: &str) -> Output {
    let mut child = root
        .dockmaster()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run dockmaster");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait for dockmaster")
}

fn ok_in(root: &TempRoot, args: &[&str]) -> String {
    let out = run_in(root, args, "");
    assert!(
        out.status.success(),
        "dockmaster {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn names(root: &TempRoot) -> Vec<String> {
    ok_in(root, &["volume", "ls", "-q"])
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn volume_commands_behave_like_dockers() {
    let root = TempRoot::new();
    assert_eq!(
        ok_in(&root, &["volume", "create", "--label", "tier=db", "data"]),
        "data\n"
    );
    // Idempotent: the existing volume, labels unchanged.
    assert_eq!(
        ok_in(&root, &["volume", "create", "--label", "x=y", "data"]),
        "data\n"
    );
    let generated = ok_in(&root, &["volume", "create"]).trim().to_string();
    assert_eq!(generated.len(), 64);
    assert!(generated.bytes().all(|b| b.is_ascii_hexdigit()));
    let mut expected = vec!["data".to_string(), generated.clone()];
    expected.sort();
    assert_eq!(names(&root), expected);

    let table = ok_in(&root, &["volume", "ls"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], "DRIVER    VOLUME NAME");
    assert!(lines.contains(&"local     data"), "{table}");

    let json = ok_in(&root, &["volume", "ls", "--format", "json"]);
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let data = rows.iter().find(|r| r["Name"] == "data").expect("data row");
    assert_eq!(data["Driver"], "local");
    assert_eq!(data["Labels"], "tier=db");
    let mountpoint = root.root().join("volumes/data/_data");
    assert_eq!(data["Mountpoint"], mountpoint.to_str().unwrap());

    let out = run_in(&root, &["volume", "inspect", "data", "nosuch"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("volume nosuch not found"));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("inspect JSON");
    assert_eq!(v.as_array().unwrap().len(), 1);
    let v = &v[0];
    assert_eq!(v["Name"], "data");
    assert_eq!(v["Driver"], "local");
    assert_eq!(v["Scope"], "local");
    assert_eq!(v["Labels"], serde_json::json!({"tier": "db"}));
    assert_eq!(v["Mountpoint"], mountpoint.to_str().unwrap());
    let created = v["CreatedAt"].as_str().unwrap();
    assert!(
        dockmaster::runtime::logs::parse_rfc3339(created).is_some(),
        "{created}"
    );
    assert!(mountpoint.is_dir());

    // Names are checked before any path is built.
    for bad in ["a", "../etc", "a/b", ".hidden", "_x", "a b"] {
        let out = run_in(&root, &["volume", "create", bad], "");
        assert_eq!(out.status.code(), Some(1), "{bad}");
        assert!(
            text(&out.stderr).contains("invalid volume name"),
            "{bad}: {}",
            text(&out.stderr)
        );
    }
    let out = run_in(&root, &["volume", "create", "-d", "nfs", "remote"], "");
    assert!(text(&out.stderr).contains("not supported"));
    assert!(!root.root().join("etc").exists());
    assert_eq!(names(&root), expected);

    // rm: removed names are printed, missing ones fail unless -f.
    let out = run_in(&root, &["volume", "rm", &generated, "nosuch"], "");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), format!("{generated}\n"));
    assert!(text(&out.stderr).contains("volume nosuch not found"));
    ok_in(&root, &["volume", "rm", "-f", "nosuch"]);
    assert_eq!(names(&root), ["data"]);
}

#[test]
fn prune_asks_and_removes_anonymous_or_all_unused_volumes() {
    let root = TempRoot::new();
    let anon = format!("--label={ANONYMOUS_LABEL}=");
    ok_in(&root, &["volume", "create", &anon, "anon1"]);
    ok_in(&root, &["volume", "create", "named"]);
    fs::write(root.root().join("volumes/anon1/_data/f"), vec![7u8; 1234]).unwrap();

    // Declined: nothing happens.
    let out = run_in(&root, &["volume", "prune"], "n\n");
    assert!(out.status.success());
    assert!(text(&out.stderr).contains("anonymous local volumes"));
    assert_eq!(names(&root), ["anon1", "named"]);

    let out = run_in(&root, &["volume", "prune"], "y\n");
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout),
        "Deleted Volumes:\nanon1\n\nTotal reclaimed space: 1.234kB\n"
    );
    assert_eq!(names(&root), ["named"]);
    assert_eq!(
        ok_in(&root, &["volume", "prune", "-f"]),
        "Total reclaimed space: 0B\n"
    );
    assert_eq!(
        ok_in(&root, &["volume", "prune", "-a", "-f"]),
        "Deleted Volumes:\nnamed\n\nTotal reclaimed space: 0B\n"
    );
    assert!(names(&root).is_empty());
    assert!(!root.root().join("volumes/named").exists());
}

/// Waits until `path` exists.
fn wait_for(path: &Path, within: Duration) {
    let deadline = Instant::now() + within;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} did not appear",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_volume_outlives_its_containers_and_is_not_removed_while_one_uses_it() {
    let host = Host::new();
    let root = &host.root;
    ok_in(root, &["volume", "create", "shared"]);
    ok_in(root, &["volume", "create", "spare"]);
    let data = root.root().join("volumes/shared/_data");
    let bind = format!("{}:/data", data.display());
    let id = host.detached(
        &["-v", &bind],
        &["sh", "-c", "echo from-container > /data/f && exec sleep 60"],
    );
    wait_for(&data.join("f"), Duration::from_secs(20));
    let name = host.inspect(&id)["Name"]
        .as_str()
        .unwrap()
        .trim_start_matches('/')
        .to_string();

    let out = host.run(&["volume", "rm", "shared"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("in use") && err.contains(&name), "{err}");
    assert!(err.contains(&id[..12]), "{err}");
    assert!(data.join("f").exists());
    // prune -a leaves it too; the unused one goes.
    assert_eq!(
        host.ok(&["volume", "prune", "-a", "-f"]),
        "Deleted Volumes:\nspare\n\nTotal reclaimed space: 0B\n"
    );

    // Another container sees the data.
    let seen = host.ok(&["run", "--rm", "-v", &bind, BUSYBOX, "cat", "/data/f"]);
    assert_eq!(seen, "from-container\n");

    // Stopped, the container still uses it (as with Docker); removed, it does not.
    host.ok(&["kill", &id]);
    host.wait_status(&id, "exited", Duration::from_secs(20));
    assert_eq!(host.run(&["volume", "rm", "shared"]).status.code(), Some(1));
    host.ok(&["rm", &id]);
    assert_eq!(
        fs::read_to_string(data.join("f")).unwrap(),
        "from-container\n"
    );
    assert_eq!(host.ok(&["volume", "rm", "shared"]), "shared\n");
    assert!(!root.root().join("volumes/shared").exists());
}

/// Imports `image` into the host's root under `tag`.
fn import(host: &Host, image: &Image, tag: &str) {
    let layout = host
        .root
        .path()
        .join(format!("layout-{}", &image.digest()[7..19]));
    write_oci_layout(&layout, &[(tag, image)]);
    host.ok(&["image", "import", layout.to_str().unwrap(), "--tag", tag]);
}

fn diff_ids(image: &Image) -> Vec<String> {
    image.diff_ids().into_iter().map(str::to_string).collect()
}

/// The expected tree below `dir` of an image, re-rooted there.
fn subtree(tree: &Tree, dir: &str) -> Tree {
    let prefix = format!("{dir}/");
    Tree(
        tree.0
            .iter()
            .filter_map(|(p, n)| p.strip_prefix(&prefix).map(|r| (r.to_string(), n.clone())))
            .collect::<BTreeMap<String, Node>>(),
    )
}

#[test]
fn a_new_volume_is_filled_from_the_image_once() {
    let host = Host::new();
    let image = multilayer_whiteouts();
    let tag = "localhost/multi:test";
    import(&host, &image, tag);
    let root = host.root.root();
    let store = VolumeStore::open(&root).unwrap();
    let layers = diff_ids(&image);
    let expected = image.expected_tree();

    for (volume, path) in [("data", "data"), ("app", "opt/app")] {
        let v = store.create(volume, BTreeMap::new()).unwrap();
        assert!(
            store
                .populate_from_image(&v, &root, &layers, &format!("/{path}"))
                .unwrap(),
            "{path}"
        );
        // Exactly the merged image content: whiteouts, opaque directories, owners, modes,
        // xattrs, symlinks and fifos as the flattened image has them.
        subtree(&expected, path).assert_matches(&Tree::from_dir(&v.path));
        let want = expected.get(path).unwrap();
        let got = fs::metadata(&v.path).unwrap();
        assert_eq!(want.kind, NodeKind::Dir);
        assert_eq!(
            (
                got.mode() & 0o7777,
                u64::from(got.uid()),
                u64::from(got.gid())
            ),
            (want.mode, want.uid, want.gid),
            "{path}"
        );
        // A second use copies nothing.
        assert!(!store
            .populate_from_image(&v, &root, &layers, &format!("/{path}"))
            .unwrap());
    }
    assert!(!Path::new(&root)
        .join("volumes/data/_data/remove-me.txt")
        .exists());

    // The filled volume mounted into a container of that image.
    let bind = format!("{}:/data", root.join("volumes/data/_data").display());
    let out = host.ok(&[
        "run",
        "--rm",
        "-v",
        &bind,
        tag,
        "sh",
        "-c",
        "cat /data/keep.txt; stat -c '%u:%g %a' /data/new.txt; readlink /data/link",
    ]);
    assert_eq!(out, "kept through all layers\n1000:1000 600\nkeep.txt\n");

    // A volume that already has content is left alone.
    let mine = store.create("mine", BTreeMap::new()).unwrap();
    fs::write(mine.path.join("keep.txt"), "the user's\n").unwrap();
    assert!(!store
        .populate_from_image(&mine, &root, &layers, "/data")
        .unwrap());
    assert_eq!(
        fs::read_dir(&mine.path).unwrap().count(),
        1,
        "nothing copied"
    );
    assert_eq!(
        fs::read_to_string(mine.path.join("keep.txt")).unwrap(),
        "the user's\n"
    );
}

#[test]
fn image_symlinks_are_resolved_inside_the_image_never_on_the_host() {
    let host = Host::new();
    // A host directory the image's symlinks name by its absolute host path.
    let outside = host.root.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("secret"), "host only\n").unwrap();
    let outside_str = outside.to_str().unwrap();
    let image = ImageBuilder::new()
        .layer(
            busybox_rootfs()
                .dir("srv")
                .dir("srv/real")
                .file_with("srv/real/conf", "inside\n", Meta::owned(0o640, 33, 33))
                .symlink("srv/real/host-link", outside_str)
                .symlink("data-link", "/srv/real")
                .symlink("climb", "../../../../srv/real")
                .symlink("escape", outside_str)
                .build(),
        )
        .layer(LayerBuilder::new().whiteout("srv/real/conf").build())
        .cmd(&["sh"])
        .build();
    let tag = "localhost/links:test";
    import(&host, &image, tag);
    let root: PathBuf = host.root.root();
    let store = VolumeStore::open(&root).unwrap();
    let layers = diff_ids(&image);

    for (i, path) in ["/data-link", "/climb", "/srv/../data-link/"]
        .iter()
        .enumerate()
    {
        let v = store.create(&format!("v{i}"), BTreeMap::new()).unwrap();
        assert!(
            store.populate_from_image(&v, &root, &layers, path).unwrap(),
            "{path}"
        );
        let names: Vec<String> = fs::read_dir(&v.path)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        // The whited-out conf is gone; the symlink is copied as a symlink, not followed.
        assert_eq!(names, ["host-link"], "{path}");
        let link = v.path.join("host-link");
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read_link(&link).unwrap(), outside);
    }
    // A symlink to a host path resolves inside the image, where there is nothing.
    let v = store.create("escape", BTreeMap::new()).unwrap();
    assert!(!store
        .populate_from_image(&v, &root, &layers, "/escape")
        .unwrap());
    assert_eq!(fs::read_dir(&v.path).unwrap().count(), 0);
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
    assert_eq!(
        fs::read_to_string(outside.join("secret")).unwrap(),
        "host only\n"
    );
}
