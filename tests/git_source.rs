//! The git source module against real servers on loopback: `git daemon`, smart HTTP with
//! basic auth (git-http-backend behind our own HTTP server), sshd, and file URLs.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dockmaster::error::{Categorized, Category};
use dockmaster::source::{
    display_url, ExportLimits, FetchLimits, GitAuth, GitRef, Mirror, ProjectDir, SourceError,
    SourceSpec,
};
use support::git_server::{
    closed_port, files_containing, git, Blackhole, GitDaemon, GitHttp, GitRepos, Sshd, WorkClone,
};
use support::run_ok;

/// Same values from every test: whichever runs first sets the process-wide timeouts.
fn setup() -> tempfile::TempDir {
    dockmaster::source::set_timeouts(Duration::from_secs(5), Duration::from_secs(5));
    tempfile::Builder::new()
        .prefix("dockmaster-git-source-")
        .tempdir()
        .expect("temp dir")
}

fn mirror_dir(tmp: &tempfile::TempDir, name: &str) -> PathBuf {
    tmp.path().join("sources").join(format!("{name}.git"))
}

fn spec(name: &str, url: &str, reference: GitRef) -> SourceSpec {
    SourceSpec {
        name: name.to_string(),
        url: url.to_string(),
        auth: GitAuth::None,
        reference,
        paths: vec![],
    }
}

fn branch(b: &str) -> GitRef {
    GitRef::Branch(b.to_string())
}

fn project(name: &str, path: &str) -> ProjectDir {
    ProjectDir {
        name: name.to_string(),
        path: path.to_string(),
    }
}

/// Whether the mirror holds the commit object (proves whether a fetch happened).
fn mirror_has(dir: &Path, commit: &str) -> bool {
    let repo = git2::Repository::open_bare(dir).expect("open mirror");
    let oid = git2::Oid::from_str(commit).expect("oid");
    let found = repo.find_commit(oid).is_ok();
    found
}

const COMPOSE: &str = "services:\n  web:\n    image: busybox\n";

#[test]
fn git_daemon_fetch_and_cheap_remote_check() {
    let tmp = setup();
    let repos = GitRepos::new();
    let bare = repos.create("app");
    let work = WorkClone::new(&bare);
    work.write("compose.yaml", COMPOSE);
    let c1 = work.commit("first");
    work.push();
    let daemon = GitDaemon::start(repos.path());

    let dir = mirror_dir(&tmp, "app");
    let m = Mirror::open(&dir, &spec("app", &daemon.url("app.git"), branch("main"))).unwrap();
    assert!(dir.join("HEAD").is_file(), "a bare repository is created");
    assert!(!dir.join(".git").exists() && !dir.join("compose.yaml").exists());
    assert_eq!(m.local_commit(), None);
    assert_eq!(m.remote_commit().unwrap(), c1);
    assert!(!mirror_has(&dir, &c1), "remote_commit fetched objects");
    assert_eq!(m.fetch().unwrap(), c1);
    assert_eq!(m.local_commit().as_deref(), Some(c1.as_str()));
    assert_eq!(m.projects(&c1).unwrap(), vec![project("app", ".")]);
    let info = m.commit_info(&c1).unwrap();
    assert_eq!(info.id, c1);
    assert_eq!(info.summary, "first");
    assert_eq!(info.author, "Test Author <author@example.test>");
    assert!(info.time > 1_600_000_000);

    // A push: the cheap check sees it, nothing is fetched until fetch().
    work.write("compose.yaml", "services: {}\n");
    let c2 = work.commit("second");
    work.push();
    assert_eq!(m.remote_commit().unwrap(), c2);
    assert!(!mirror_has(&dir, &c2), "remote_commit must not fetch");
    assert_eq!(m.local_commit().as_deref(), Some(c1.as_str()));
    assert_eq!(m.fetch().unwrap(), c2);
    assert_eq!(m.local_commit().as_deref(), Some(c2.as_str()));

    // A second Mirror on the same directory (the agent re-opens per sync) sees the state.
    let again = Mirror::open(&dir, m.spec()).unwrap();
    assert_eq!(again.local_commit().as_deref(), Some(c2.as_str()));

    // A repository the daemon does not have.
    let err = Mirror::open(
        &mirror_dir(&tmp, "nope"),
        &spec("nope", &daemon.url("nope.git"), branch("main")),
    )
    .unwrap()
    .remote_commit()
    .unwrap_err();
    assert!(matches!(err, SourceError::RepoNotFound { .. }), "{err:?}");
    assert_eq!(err.category(), Category::NotFound);

    // Offline: the daemon is gone, the last fetch is still there.
    drop(daemon);
    let err = m.remote_commit().unwrap_err();
    assert_eq!(err.category(), Category::Transient, "{err}");
    assert_eq!(m.local_commit().as_deref(), Some(c2.as_str()));
    assert_eq!(m.projects(&c2).unwrap(), vec![project("app", ".")]);
}

#[test]
fn smart_http_with_basic_auth() {
    let tmp = setup();
    let repos = GitRepos::new();
    let bare = repos.create("app");
    let work = WorkClone::new(&bare);
    work.write("web/compose.yaml", COMPOSE);
    let c1 = work.commit("first");
    work.push();
    let password = "pa55-w0rd-xyz";
    let http = GitHttp::start(repos.path(), Some(("alice", password)));

    let dir = mirror_dir(&tmp, "web");
    let mut s = spec("web", &http.url("app.git"), branch("main"));
    s.auth = GitAuth::Basic {
        username: "alice".into(),
        password: password.into(),
    };
    let m = Mirror::open(&dir, &s).unwrap();
    assert_eq!(m.remote_commit().unwrap(), c1);
    assert_eq!(m.fetch().unwrap(), c1);
    assert_eq!(m.projects(&c1).unwrap(), vec![project("web", "web")]);
    assert!(
        http.requests()
            .iter()
            .any(|r| r.user.as_deref() == Some("alice")),
        "{:?}",
        http.requests()
    );
    // Credentials are nowhere in the mirror (config, FETCH_HEAD, logs...).
    assert_eq!(files_containing(&dir, password), Vec::<PathBuf>::new());
    assert_eq!(files_containing(&dir, "alice"), Vec::<PathBuf>::new());
    let config = fs::read_to_string(dir.join("config")).unwrap();
    assert!(!config.contains("remote"), "no remote is stored:\n{config}");

    // remote_commit after a push: only the ref advertisement, no upload-pack POST.
    work.write("web/compose.yaml", "services: {}\n");
    let c2 = work.commit("second");
    work.push();
    http.clear_requests();
    assert_eq!(m.remote_commit().unwrap(), c2);
    let reqs = http.requests();
    assert!(!reqs.is_empty());
    assert!(
        reqs.iter()
            .all(|r| r.method == "GET" && r.target.contains("/info/refs")),
        "ls-remote made other requests: {reqs:?}"
    );
    assert!(!mirror_has(&dir, &c2));
    http.clear_requests();
    assert_eq!(m.fetch().unwrap(), c2);
    assert!(
        http.requests()
            .iter()
            .any(|r| r.method == "POST" && r.target.ends_with("git-upload-pack")),
        "{:?}",
        http.requests()
    );

    // Wrong password: a clear, quick error without the secret; libgit2 is not left looping.
    let mut bad = s.clone();
    bad.name = "bad".into();
    bad.auth = GitAuth::Basic {
        username: "alice".into(),
        password: "wrong-secret-123".into(),
    };
    let bm = Mirror::open(&mirror_dir(&tmp, "bad"), &bad).unwrap();
    http.clear_requests();
    let started = Instant::now();
    let err = bm.fetch().unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(err, SourceError::Auth { .. }), "{err:?}");
    assert_eq!(err.category(), Category::Invalid);
    let msg = err.to_string();
    assert!(
        msg.contains("source bad") && msg.contains(&http.url("app.git")),
        "{msg}"
    );
    assert!(msg.contains("refused"), "{msg}");
    assert!(!msg.contains("wrong-secret-123"), "{msg}");
    let tries = http.requests().iter().filter(|r| r.status == 401).count();
    assert!(tries <= 3, "credentials retried {tries} times");
    let err = bm.remote_commit().unwrap_err();
    assert!(matches!(err, SourceError::Auth { .. }), "{err:?}");

    // A repository the server does not have (404).
    let mut nope = s.clone();
    nope.name = "nope".into();
    nope.url = http.url("nope.git");
    let err = Mirror::open(&mirror_dir(&tmp, "nope"), &nope)
        .unwrap()
        .remote_commit()
        .unwrap_err();
    assert!(matches!(err, SourceError::RepoNotFound { .. }), "{err:?}");

    // No credentials at all.
    let anon = Mirror::open(
        &mirror_dir(&tmp, "anon"),
        &spec("anon", &http.url("app.git"), branch("main")),
    )
    .unwrap();
    let err = anon.remote_commit().unwrap_err();
    assert!(err.to_string().contains("none is configured"), "{err}");

    // Credentials in the URL work, and never show.
    let url = http.url_with_credentials("app.git");
    let um = Mirror::open(
        &mirror_dir(&tmp, "inurl"),
        &spec("inurl", &url, branch("main")),
    )
    .unwrap();
    assert_eq!(um.display_url(), http.url("app.git"));
    assert_eq!(um.fetch().unwrap(), c2);
    assert!(files_containing(&mirror_dir(&tmp, "inurl"), password).is_empty());
    let err = Mirror::open(
        &mirror_dir(&tmp, "inurl2"),
        &spec("inurl2", &url, branch("nope")),
    )
    .unwrap()
    .fetch()
    .unwrap_err();
    assert!(matches!(err, SourceError::RefNotFound { .. }), "{err:?}");
    assert!(!err.to_string().contains(password), "{err}");
    assert!(!format!("{err:?}").contains(password), "{err:?}");
}

#[test]
fn smart_http_token_auth() {
    let tmp = setup();
    let repos = GitRepos::new();
    let bare = repos.create("app");
    let work = WorkClone::new(&bare);
    work.write("compose.yaml", COMPOSE);
    let c1 = work.commit("first");
    work.push();
    let token = "tok_0123456789abcdef";
    let http = GitHttp::start(repos.path(), Some((GitAuth::TOKEN_USER, token)));
    let mut s = spec("tok", &http.url("app.git"), branch("main"));
    s.auth = GitAuth::Token(token.into());
    let m = Mirror::open(&mirror_dir(&tmp, "tok"), &s).unwrap();
    assert_eq!(m.fetch().unwrap(), c1);
    assert!(files_containing(m.dir(), token).is_empty());
    s.auth = GitAuth::Token("tok_wrong".into());
    let err = Mirror::open(&mirror_dir(&tmp, "tok2"), &s)
        .unwrap()
        .fetch()
        .unwrap_err();
    assert!(
        matches!(err, SourceError::Auth { auth: "token", .. }),
        "{err:?}"
    );
    assert!(!format!("{err} {err:?} {s:?}").contains("tok_wrong"));
}

#[test]
fn file_urls_and_plain_paths() {
    let tmp = setup();
    let repos = GitRepos::new();
    let bare = repos.create("app");
    let work = WorkClone::new(&bare);
    work.write("a/compose.yaml", COMPOSE);
    let c1 = work.commit("first");
    work.push();
    for (name, url) in [
        ("viafile", repos.file_url("app")),
        ("viapath", bare.display().to_string()),
    ] {
        let m = Mirror::open(&mirror_dir(&tmp, name), &spec(name, &url, branch("main"))).unwrap();
        assert_eq!(m.remote_commit().unwrap(), c1, "{url}");
        assert_eq!(m.fetch().unwrap(), c1, "{url}");
        assert_eq!(m.projects(&c1).unwrap(), vec![project("a", "a")]);
    }
    let missing = tmp.path().join("no-such-repo.git");
    let err = Mirror::open(
        &mirror_dir(&tmp, "missing"),
        &spec("missing", &missing.display().to_string(), branch("main")),
    )
    .unwrap()
    .fetch()
    .unwrap_err();
    assert_eq!(err.category(), Category::NotFound, "{err:?}");
}

#[test]
fn force_push_rewrites_history() {
    let tmp = setup();
    let repos = GitRepos::new();
    let bare = repos.create("app");
    let work = WorkClone::new(&bare);
    work.write("compose.yaml", COMPOSE);
    let c1 = work.commit("first");
    work.write("extra/compose.yaml", COMPOSE);
    let c2 = work.commit("second");
    work.push();
    let daemon = GitDaemon::start(repos.path());
    let m = Mirror::open(
        &mirror_dir(&tmp, "app"),
        &spec("app", &daemon.url("app.git"), branch("main")),
    )
    .unwrap();
    assert_eq!(m.fetch().unwrap(), c2);

    work.reset_hard(&c1);
    work.write("other/compose.yaml", COMPOSE);
    let c3 = work.commit("rewritten");
    work.force_push();
    assert_eq!(m.remote_commit().unwrap(), c3);
    assert_eq!(m.fetch().unwrap(), c3);
    assert_eq!(m.local_commit().as_deref(), Some(c3.as_str()));
    let root = m.projects(&c3).unwrap();
    assert_eq!(root, vec![project("app", ".")]);
    // Explicit paths see the rewritten tree (other/ exists, extra/ is gone).
    let mut s = m.spec().clone();
    s.paths = vec!["other".into()];
    let m2 = Mirror::open(m.dir(), &s).unwrap();
    assert_eq!(m2.projects(&c3).unwrap(), vec![project("other", "other")]);
    s.paths = vec!["extra".into()];
    let m3 = Mirror::open(m.dir(), &s).unwrap();
    assert!(matches!(
        m3.projects(&c3).unwrap_err(),
        SourceError::PathNotFound { .. }
    ));
}

#[test]
fn tags_and_commits() {
    let tmp = setup();
    let repos = GitRepos::new();
    let bare = repos.create("app");
    let work = WorkClone::new(&bare);
    work.write("compose.yaml", COMPOSE);
    let c1 = work.commit("first");
    work.tag("v1");
    work.write("compose.yaml", "services: {}\n");
    let c2 = work.commit("second");
    work.annotated_tag("v2", "release two");
    work.push();
    let mut daemon = GitDaemon::start(repos.path());
    let url = daemon.url("app.git");

    let t1 = Mirror::open(
        &mirror_dir(&tmp, "t1"),
        &spec("t1", &url, GitRef::Tag("v1".into())),
    )
    .unwrap();
    assert_eq!(t1.remote_commit().unwrap(), c1);
    assert_eq!(t1.fetch().unwrap(), c1);
    assert_eq!(t1.local_commit().as_deref(), Some(c1.as_str()));

    // Annotated: the peeled commit, remotely and locally.
    let t2 = Mirror::open(
        &mirror_dir(&tmp, "t2"),
        &spec("t2", &url, GitRef::Tag("v2".into())),
    )
    .unwrap();
    assert_eq!(t2.remote_commit().unwrap(), c2);
    assert_eq!(t2.fetch().unwrap(), c2);
    assert_eq!(t2.local_commit().as_deref(), Some(c2.as_str()));

    // A moved tag is followed.
    work.tag("v1");
    assert_eq!(t1.remote_commit().unwrap(), c2);
    assert_eq!(t1.fetch().unwrap(), c2);

    // Commits, full and abbreviated.
    let cm = Mirror::open(
        &mirror_dir(&tmp, "c"),
        &spec("c", &url, GitRef::Commit(c1.clone())),
    )
    .unwrap();
    assert_eq!(cm.local_commit(), None);
    assert_eq!(cm.remote_commit().unwrap(), c1);
    assert_eq!(cm.fetch().unwrap(), c1);
    assert_eq!(cm.local_commit().as_deref(), Some(c1.as_str()));
    let short = Mirror::open(
        &mirror_dir(&tmp, "short"),
        &spec("short", &url, GitRef::Commit(c1[..8].to_string())),
    )
    .unwrap();
    assert_eq!(short.fetch().unwrap(), c1);

    // Unknown references.
    let err = Mirror::open(&mirror_dir(&tmp, "nb"), &spec("nb", &url, branch("nope")))
        .unwrap()
        .remote_commit()
        .unwrap_err();
    assert!(matches!(err, SourceError::RefNotFound { .. }), "{err:?}");
    assert_eq!(err.category(), Category::NotFound);
    assert!(err.to_string().contains("branch nope"), "{err}");
    let err = Mirror::open(
        &mirror_dir(&tmp, "nc"),
        &spec(
            "nc",
            &url,
            GitRef::Commit("0123456789abcdef0123456789abcdef01234567".into()),
        ),
    )
    .unwrap()
    .fetch()
    .unwrap_err();
    assert!(matches!(err, SourceError::RefNotFound { .. }), "{err:?}");

    // A fetched commit needs no network any more.
    daemon.stop();
    assert_eq!(cm.remote_commit().unwrap(), c1);
    assert_eq!(cm.fetch().unwrap(), c1);
    assert!(t1.remote_commit().is_err());
}

#[test]
fn project_discovery() {
    let tmp = setup();
    let repos = GitRepos::new();
    let bare = repos.create("app");
    let work = WorkClone::new(&bare);
    work.write("README.md", "hi\n")
        .write("apps/web/compose.yaml", COMPOSE)
        .write("apps/db/docker-compose.yml", COMPOSE)
        .write("apps/notes/README", "no compose here\n")
        .write("apps/deep/nested/compose.yaml", COMPOSE)
        .write("infra/compose.yml", COMPOSE)
        .write("more/web/docker-compose.yaml", COMPOSE)
        .write("file-not-dir", "x\n");
    let c1 = work.commit("layout");
    work.push();
    let url = repos.file_url("app");
    let open = |paths: &[&str]| {
        let mut s = spec("src", &url, branch("main"));
        s.paths = paths.iter().map(|p| p.to_string()).collect();
        let m = Mirror::open(&mirror_dir(&tmp, "src"), &s).unwrap();
        m.fetch().unwrap();
        m
    };
    // Default: the root has no compose file, so each direct subdirectory with one.
    assert_eq!(
        open(&[]).projects(&c1).unwrap(),
        vec![project("infra", "infra")]
    );
    assert_eq!(
        open(&["apps"]).projects(&c1).unwrap(),
        vec![project("db", "apps/db"), project("web", "apps/web")]
    );
    assert_eq!(
        open(&["./apps/", "infra"]).projects(&c1).unwrap(),
        vec![
            project("db", "apps/db"),
            project("infra", "infra"),
            project("web", "apps/web")
        ]
    );
    assert_eq!(
        open(&["apps/web"]).projects(&c1).unwrap(),
        vec![project("web", "apps/web")]
    );
    assert_eq!(open(&["apps/notes"]).projects(&c1).unwrap(), vec![]);
    let err = open(&["apps", "more"]).projects(&c1).unwrap_err();
    assert!(
        err.to_string().contains("two projects named \"web\""),
        "{err}"
    );
    let err = open(&["missing"]).projects(&c1).unwrap_err();
    assert!(matches!(err, SourceError::PathNotFound { .. }), "{err:?}");
    assert_eq!(err.category(), Category::NotFound);
    let err = open(&["file-not-dir"]).projects(&c1).unwrap_err();
    assert!(matches!(err, SourceError::PathNotFound { .. }), "{err:?}");

    // A root compose file makes the root the project, named after the source.
    work.write("compose.yaml", COMPOSE);
    let c2 = work.commit("root project");
    work.push();
    assert_eq!(
        open(&["."]).projects(&c2).unwrap(),
        vec![project("src", ".")]
    );

    // Bad paths are configuration errors.
    let mut s = spec("src", &url, branch("main"));
    s.paths = vec!["../etc".into()];
    let err = Mirror::open(&mirror_dir(&tmp, "bad"), &s).unwrap_err();
    assert!(matches!(err, SourceError::InvalidSpec { .. }), "{err:?}");
    assert_eq!(err.category(), Category::Invalid);
    let err = open(&[])
        .projects("0123456789abcdef0123456789abcdef01234567")
        .unwrap_err();
    assert!(matches!(err, SourceError::CommitNotFound { .. }), "{err:?}");
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn export_writes_the_subtree_atomically() {
    let tmp = setup();
    let repos = GitRepos::new();
    let bare = repos.create("app");
    let work = WorkClone::new(&bare);
    work.write("web/compose.yaml", COMPOSE)
        .write("web/conf/app.conf", "key=value\n")
        .write_exec("web/bin/start.sh", "#!/bin/sh\necho hi\n")
        .symlink("web/current.conf", "conf/app.conf")
        .symlink("web/bin/conf-link", "../conf/app.conf")
        .write("other/secret.txt", "not exported\n");
    let c1 = work.commit("web");
    // A submodule entry (gitlink) is skipped.
    run_ok(
        work.git()
            .args(["update-index", "--add", "--cacheinfo"])
            .arg(format!("160000,{c1},web/vendored")),
    );
    run_ok(work.git().args(["commit", "-q", "-m", "with submodule"]));
    let c2 = work.head();
    work.push();
    let m = Mirror::open(
        &mirror_dir(&tmp, "app"),
        &spec("app", &repos.file_url("app"), branch("main")),
    )
    .unwrap();
    assert_eq!(m.fetch().unwrap(), c2);

    let out = tmp.path().join("checkouts");
    fs::create_dir_all(&out).unwrap();
    let dest = out.join("web");
    m.export(&c2, "web", &dest).unwrap();
    assert_eq!(
        fs::read_to_string(dest.join("compose.yaml")).unwrap(),
        COMPOSE
    );
    assert_eq!(
        fs::read_to_string(dest.join("conf/app.conf")).unwrap(),
        "key=value\n"
    );
    assert_eq!(mode(&dest.join("bin/start.sh")), 0o755);
    assert_eq!(mode(&dest.join("compose.yaml")), 0o644);
    assert_eq!(mode(&dest.join("conf")), 0o755);
    assert_eq!(
        fs::read_link(dest.join("current.conf")).unwrap(),
        Path::new("conf/app.conf")
    );
    assert_eq!(
        fs::read_to_string(dest.join("bin/conf-link")).unwrap(),
        "key=value\n"
    );
    assert!(!dest.join("vendored").exists(), "submodules are skipped");
    assert!(!dest.join("secret.txt").exists());
    let mut names: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["web"], "no temporary directory is left");

    // The destination must be new.
    let err = m.export(&c2, "web", &dest).unwrap_err();
    assert!(matches!(err, SourceError::DestExists { .. }), "{err:?}");
    assert_eq!(err.category(), Category::Conflict);

    // The root works too, and so does a missing path (an error).
    m.export(&c2, ".", &out.join("root")).unwrap();
    assert!(out.join("root/other/secret.txt").is_file());
    assert!(matches!(
        m.export(&c2, "nope", &out.join("nope")).unwrap_err(),
        SourceError::PathNotFound { .. }
    ));

    // Limits.
    let tight = ExportLimits {
        max_total_bytes: 10,
        ..ExportLimits::default()
    };
    let err = m
        .export_with(&c2, "web", &out.join("big"), &tight)
        .unwrap_err();
    assert!(err.to_string().contains("more than 10 bytes"), "{err}");
    let few = ExportLimits {
        max_entries: 3,
        ..ExportLimits::default()
    };
    let err = m
        .export_with(&c2, "web", &out.join("many"), &few)
        .unwrap_err();
    assert!(err.to_string().contains("more than 3 entries"), "{err}");
    assert!(!out.join("big").exists() && !out.join("many").exists());
    let mut names: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec!["root", "web"],
        "failed exports leave nothing behind"
    );
}

#[test]
fn export_refuses_escaping_symlinks() {
    let tmp = setup();
    let repos = GitRepos::new();
    let bare = repos.create("app");
    let work = WorkClone::new(&bare);
    work.write("shared/x.conf", "shared\n");
    work.write("web/compose.yaml", COMPOSE);
    work.write("web/a/file", "a\n");
    work.commit("base");
    let url = repos.file_url("app");
    let out = tmp.path().join("out");
    fs::create_dir_all(&out).unwrap();
    let cases = [
        ("web/escape", "../../../../etc/passwd"),
        ("web/abs", "/etc/passwd"),
        ("web/sibling", "../shared/x.conf"),
        ("web/a/updown", "x/../../.."),
    ];
    for (i, (link, target)) in cases.iter().enumerate() {
        work.symlink(link, target);
        let c = work.commit(&format!("bad link {link}"));
        work.push();
        let m = Mirror::open(&mirror_dir(&tmp, "app"), &spec("app", &url, branch("main"))).unwrap();
        assert_eq!(m.fetch().unwrap(), c);
        let dest = out.join(format!("try{i}"));
        let err = m.export(&c, "web", &dest).unwrap_err();
        assert!(matches!(err, SourceError::Export { .. }), "{link}: {err:?}");
        assert_eq!(err.category(), Category::Invalid);
        let shown = link.trim_start_matches("web/");
        assert!(err.to_string().contains(shown), "{err}");
        assert!(!dest.exists());
        assert_eq!(
            fs::read_dir(&out).unwrap().count(),
            0,
            "temp dir left behind"
        );
        work.remove(link);
    }
    // From the repository root, ../shared from web/ stays inside: allowed.
    work.symlink("web/sibling", "../shared/x.conf");
    let c = work.commit("ok link");
    work.push();
    let m = Mirror::open(&mirror_dir(&tmp, "app"), &spec("app", &url, branch("main"))).unwrap();
    m.fetch().unwrap();
    m.export(&c, ".", &out.join("all")).unwrap();
    assert_eq!(
        fs::read_to_string(out.join("all/web/sibling")).unwrap(),
        "shared\n"
    );
}

/// Every file below `dir/objects` (loose objects and packs).
fn object_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.join("objects")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn corrupt_mirror_is_recloned() {
    let tmp = setup();
    let repos = GitRepos::new();
    let bare = repos.create("app");
    let work = WorkClone::new(&bare);
    work.write("web/compose.yaml", COMPOSE);
    let c1 = work.commit("first");
    work.push();
    let daemon = GitDaemon::start(repos.path());
    let dir = mirror_dir(&tmp, "app");
    let s = spec("app", &daemon.url("app.git"), branch("main"));
    let m = Mirror::open(&dir, &s).unwrap();
    assert_eq!(m.fetch().unwrap(), c1);

    // 1. Objects deleted behind libgit2's back, then a new commit arrives.
    let files = object_files(&dir);
    assert!(!files.is_empty());
    for f in files {
        fs::remove_file(f).unwrap();
    }
    work.write("web/compose.yaml", "services: {}\n");
    let c2 = work.commit("second");
    work.push();
    assert_eq!(m.fetch().unwrap(), c2);
    assert_eq!(m.projects(&c2).unwrap(), vec![project("web", "web")]);
    assert!(mirror_has(&dir, &c1), "the re-clone has the whole history");
    assert!(!tmp.path().join("sources/app.git.new").exists());
    assert!(!tmp.path().join("sources/app.git.old").exists());

    // 2. Pack files truncated, same commit on the server: fetch repairs.
    for f in object_files(&dir) {
        if f.extension().is_some_and(|e| e == "pack") {
            fs::write(&f, b"PACK").unwrap();
        }
    }
    assert_eq!(m.fetch().unwrap(), c2);
    let out = tmp.path().join("export");
    m.export(&c2, "web", &out).unwrap();
    assert_eq!(
        fs::read_to_string(out.join("compose.yaml")).unwrap(),
        "services: {}\n"
    );

    // 3. HEAD and config destroyed: open moves it aside and starts over; fetch fills it.
    fs::write(dir.join("HEAD"), b"").unwrap();
    fs::write(dir.join("config"), b"[[[ garbage").unwrap();
    let m = Mirror::open(&dir, &s).unwrap();
    assert!(tmp.path().join("sources/app.git.corrupt").is_dir());
    assert_eq!(m.local_commit(), None);
    assert_eq!(m.fetch().unwrap(), c2);
    assert_eq!(m.local_commit().as_deref(), Some(c2.as_str()));

    // 4. A stale lock from a killed fetch does not block the next one.
    fs::write(dir.join("refs/heads/main.lock"), b"").unwrap();
    work.write("web/compose.yaml", COMPOSE);
    let c3 = work.commit("third");
    work.push();
    assert_eq!(m.fetch().unwrap(), c3);

    // 5. Unreachable server with a corrupt mirror: the error is returned and the broken
    //    mirror is kept (no half-made replacement).
    let files = object_files(&dir);
    for f in files {
        fs::remove_file(f).unwrap();
    }
    let gone = Mirror::open(
        &dir,
        &spec(
            "app",
            &format!("git://127.0.0.1:{}/app.git", closed_port()),
            branch("main"),
        ),
    )
    .unwrap();
    work.write("x", "x");
    work.commit("fourth");
    work.push();
    assert!(gone.fetch().is_err());
    assert!(dir.join("HEAD").is_file());
    assert!(!tmp.path().join("sources/app.git.new").exists());
}

#[test]
fn unreachable_servers_fail_quickly() {
    let tmp = setup();
    let port = closed_port();
    let url = format!("git://127.0.0.1:{port}/app.git");
    let m = Mirror::open(
        &mirror_dir(&tmp, "dead"),
        &spec("dead", &url, branch("main")),
    )
    .unwrap();
    let started = Instant::now();
    let err = m.remote_commit().unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, SourceError::Unreachable { .. }), "{err:?}");
    assert_eq!(err.category(), Category::Transient);
    let msg = err.to_string();
    assert!(msg.contains("source dead") && msg.contains(&url), "{msg}");
    let err = m.fetch().unwrap_err();
    assert_eq!(err.category(), Category::Transient, "{err:?}");

    let http = format!("http://127.0.0.1:{port}/app.git");
    let m = Mirror::open(
        &mirror_dir(&tmp, "deadhttp"),
        &spec("deadhttp", &http, branch("main")),
    )
    .unwrap();
    assert_eq!(
        m.remote_commit().unwrap_err().category(),
        Category::Transient
    );

    // A server that accepts and then says nothing: the io timeout (5 s here) ends it.
    let hole = Blackhole::start();
    for (name, url) in [
        ("hang", format!("git://127.0.0.1:{}/app.git", hole.port())),
        (
            "hanghttp",
            format!("http://127.0.0.1:{}/app.git", hole.port()),
        ),
    ] {
        let m = Mirror::open(&mirror_dir(&tmp, name), &spec(name, &url, branch("main"))).unwrap();
        let started = Instant::now();
        let err = m.remote_commit().unwrap_err();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(15), "{url}: took {took:?}");
        assert!(err.to_string().contains("timed out"), "{err}");
        assert_eq!(err.category(), Category::Transient, "{err:?}");
    }
}

#[test]
fn fetch_limits_stop_big_transfers() {
    let tmp = setup();
    let repos = GitRepos::new();
    let bare = repos.create("big");
    let work = WorkClone::new(&bare);
    // Incompressible content so the pack is really big.
    let mut data = Vec::with_capacity(256 << 10);
    let mut x: u64 = 0x9E3779B97F4A7C15;
    while data.len() < 256 << 10 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    work.write_bytes("blob.bin", &data, 0o644);
    work.write("compose.yaml", COMPOSE);
    work.commit("big");
    work.push();
    let daemon = GitDaemon::start(repos.path());
    let m = Mirror::open(
        &mirror_dir(&tmp, "big"),
        &spec("big", &daemon.url("big.git"), branch("main")),
    )
    .unwrap()
    .with_fetch_limits(FetchLimits {
        max_bytes: 64 << 10,
        ..FetchLimits::default()
    });
    let err = m.fetch().unwrap_err();
    assert!(err.to_string().contains("more than 65536 bytes"), "{err}");
    assert_eq!(err.category(), Category::Invalid);
    assert_eq!(m.local_commit(), None);
}

#[test]
fn ssh_with_key_and_known_hosts() {
    let tmp = setup();
    let repos = GitRepos::new();
    let bare = repos.create("app");
    let work = WorkClone::new(&bare);
    work.write("compose.yaml", COMPOSE);
    let c1 = work.commit("first");
    work.push();
    let sshd = Sshd::start();
    let url = sshd.url(&bare);
    let auth = |key: PathBuf, known_hosts: PathBuf| GitAuth::Ssh {
        key,
        known_hosts,
        username: GitAuth::DEFAULT_SSH_USER.into(),
    };
    let mut s = spec("ssh", &url, branch("main"));
    s.auth = auth(sshd.user_key(), sshd.known_hosts());
    let m = Mirror::open(&mirror_dir(&tmp, "ssh"), &s).unwrap();
    assert_eq!(m.remote_commit().unwrap(), c1, "sshd log:\n{}", sshd.log());
    assert_eq!(m.fetch().unwrap(), c1);
    assert_eq!(m.projects(&c1).unwrap(), vec![project("ssh", ".")]);

    // Hashed known_hosts entries work.
    let hashed = tmp.path().join("known_hosts.hashed");
    sshd.write_hashed_known_hosts(&hashed, &sshd.host_public_key());
    assert!(fs::read_to_string(&hashed).unwrap().starts_with("|1|"));
    s.auth = auth(sshd.user_key(), hashed);
    let m = Mirror::open(&mirror_dir(&tmp, "ssh-hashed"), &s).unwrap();
    assert_eq!(m.fetch().unwrap(), c1);

    // A different key for the host: refused, never accepted.
    let wrong = tmp.path().join("known_hosts.wrong");
    sshd.write_known_hosts(&wrong, &sshd.other_public_key());
    s.auth = auth(sshd.user_key(), wrong.clone());
    let m = Mirror::open(&mirror_dir(&tmp, "ssh-wrong"), &s).unwrap();
    let err = m.fetch().unwrap_err();
    assert!(matches!(err, SourceError::HostKey { .. }), "{err:?}");
    assert!(err.to_string().contains("different key"), "{err}");
    assert_eq!(err.category(), Category::Invalid);
    assert!(m.remote_commit().is_err());
    assert_eq!(m.local_commit(), None);

    // The host not listed at all.
    let empty = tmp.path().join("known_hosts.empty");
    fs::write(&empty, "# nothing\n").unwrap();
    s.auth = auth(sshd.user_key(), empty);
    let err = Mirror::open(&mirror_dir(&tmp, "ssh-unknown"), &s)
        .unwrap()
        .remote_commit()
        .unwrap_err();
    assert!(err.to_string().contains("is not listed"), "{err}");

    // A key the server does not accept: an auth error, not a hang.
    s.auth = auth(sshd.unauthorized_key(), sshd.known_hosts());
    let started = Instant::now();
    let err = Mirror::open(&mirror_dir(&tmp, "ssh-badkey"), &s)
        .unwrap()
        .fetch()
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(matches!(err, SourceError::Auth { .. }), "{err:?}");

    // ssh without a key is a configuration error.
    let err = Mirror::open(
        &mirror_dir(&tmp, "ssh-none"),
        &spec("x", &url, branch("main")),
    )
    .unwrap_err();
    assert!(matches!(err, SourceError::InvalidSpec { .. }), "{err:?}");
}

#[test]
fn display_urls_in_errors_have_no_credentials() {
    let tmp = setup();
    assert_eq!(
        display_url("https://bob:hunter2@example.test/r.git"),
        "https://example.test/r.git"
    );
    let err = Mirror::open(
        &mirror_dir(&tmp, "x"),
        &spec("x", "ftp://bob:hunter2@example.test/r.git", branch("main")),
    )
    .unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(matches!(err, SourceError::InvalidSpec { .. }));
    // Nothing about credentials is in the mirror's config after open.
    let url = format!("http://bob:hunter2@127.0.0.1:{}/r.git", closed_port());
    let m = Mirror::open(&mirror_dir(&tmp, "y"), &spec("y", &url, branch("main"))).unwrap();
    let err = m.fetch().unwrap_err();
    assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
    assert!(files_containing(m.dir(), "hunter2").is_empty());
    // git is the same installation everywhere (a smoke check of the helper).
    assert!(run_ok(git().arg("--version")).starts_with("git version"));
}
