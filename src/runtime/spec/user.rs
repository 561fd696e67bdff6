//! `--user` resolution against the image's /etc/passwd and /etc/group, with runc's rules (as
//! Docker uses them): `name`, `uid`, `name:group`, `uid:gid`, `uid:group`, `name:gid`; a numeric
//! uid without a passwd entry is fine (home `/`, gid 0), an unknown name is an error; the first
//! matching line wins. Supplementary groups are every group listing the user by name, only when
//! no group was given explicitly; Docker then puts the primary gid first in the list, and
//! appends `--group-add` entries (names or numbers).

use super::rootfs::RootfsView;
use super::SpecError;

/// The largest passwd or group file read (bigger ones are refused, not truncated).
pub const MAX_DB_FILE: u64 = 4 << 20;
/// runc's bound for ids: they must fit a signed 32-bit int.
const MAX_ID: u32 = i32::MAX as u32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// Who the container's process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Primary gid first, then the user's supplementary groups, then the added groups; no
    /// duplicates.
    pub additional_gids: Vec<u32>,
    /// From the passwd entry, `/` when there is none.
    pub home: String,
}

/// A decimal id; too large to parse reads as `u64::MAX` (then refused as out of range).
fn parse_id(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse::<u64>().unwrap_or(u64::MAX))
}

fn parse_db_id(s: &str) -> Option<u32> {
    parse_id(s).and_then(|v| u32::try_from(v).ok())
}

fn db_lines(bytes: &[u8]) -> impl Iterator<Item = &str> {
    bytes
        .split(|b| *b == b'\n')
        .filter_map(|l| std::str::from_utf8(l).ok())
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// Lines of an /etc/passwd; lines with a non-numeric uid or gid are skipped (never read as 0).
pub fn parse_passwd(bytes: &[u8]) -> Vec<PasswdEntry> {
    db_lines(bytes)
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            let name = f.first().filter(|n| !n.is_empty())?;
            let uid = parse_db_id(f.get(2)?)?;
            let gid = parse_db_id(f.get(3)?)?;
            Some(PasswdEntry {
                name: name.to_string(),
                uid,
                gid,
                home: f.get(5).copied().unwrap_or("").to_string(),
            })
        })
        .collect()
}

/// Lines of an /etc/group; lines with a non-numeric gid are skipped.
pub fn parse_group(bytes: &[u8]) -> Vec<GroupEntry> {
    db_lines(bytes)
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            let name = f.first().filter(|n| !n.is_empty())?;
            let gid = parse_db_id(f.get(2)?)?;
            let members = f
                .get(3)
                .map(|m| {
                    m.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            Some(GroupEntry {
                name: name.to_string(),
                gid,
                members,
            })
        })
        .collect()
}

/// Reads the passwd and group databases at most once each.
struct Databases<'a> {
    rootfs: &'a dyn RootfsView,
    image: &'a str,
    passwd: Option<Vec<PasswdEntry>>,
    group: Option<Vec<GroupEntry>>,
}

impl Databases<'_> {
    fn read(&self, path: &str) -> Result<Vec<u8>, SpecError> {
        self.rootfs
            .read_file(path, MAX_DB_FILE)
            .map(Option::unwrap_or_default)
            .map_err(|source| SpecError::Rootfs {
                image: self.image.to_string(),
                path: path.to_string(),
                source,
            })
    }

    fn passwd(&mut self) -> Result<&[PasswdEntry], SpecError> {
        if self.passwd.is_none() {
            self.passwd = Some(parse_passwd(&self.read("/etc/passwd")?));
        }
        Ok(self.passwd.as_deref().unwrap_or_default())
    }

    fn group(&mut self) -> Result<&[GroupEntry], SpecError> {
        if self.group.is_none() {
            self.group = Some(parse_group(&self.read("/etc/group")?));
        }
        Ok(self.group.as_deref().unwrap_or_default())
    }
}

fn check_range(field: &'static str, value: &str, id: u64) -> Result<u32, SpecError> {
    match u32::try_from(id) {
        Ok(id) if id <= MAX_ID => Ok(id),
        _ => Err(SpecError::invalid(
            field,
            value,
            format!("ids must be at most {MAX_ID}"),
        )),
    }
}

/// Resolves a user spec (`""` means root) and `--group-add` entries against the image.
pub fn resolve_user(
    spec: &str,
    group_add: &[String],
    rootfs: &dyn RootfsView,
    image: &str,
) -> Result<ResolvedUser, SpecError> {
    if spec.contains(['\0', '\n']) {
        return Err(SpecError::invalid(
            "user",
            spec,
            "contains a control character",
        ));
    }
    let (user_arg, group_arg) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if group_arg.is_some_and(|g| g.contains(':')) {
        return Err(SpecError::invalid(
            "user",
            spec,
            "expected USER, USER:GROUP, UID or UID:GID",
        ));
    }
    let group_arg = group_arg.filter(|g| !g.is_empty());
    let mut db = Databases {
        rootfs,
        image,
        passwd: None,
        group: None,
    };

    let numeric_uid = parse_id(user_arg);
    let matched = db
        .passwd()?
        .iter()
        .find(|p| match (user_arg, numeric_uid) {
            ("", _) => p.uid == 0,
            (_, Some(uid)) => u64::from(p.uid) == uid,
            (name, None) => p.name == name,
        })
        .cloned();
    let (uid, mut gid, home, matched_name) = match (matched, numeric_uid) {
        (Some(p), _) => (p.uid, p.gid, p.home, Some(p.name)),
        (None, Some(uid)) => (check_range("user", spec, uid)?, 0, String::new(), None),
        (None, None) if user_arg.is_empty() => (0, 0, String::new(), None),
        (None, None) => {
            if user_arg.starts_with('-') || user_arg.starts_with('+') {
                return Err(SpecError::invalid("user", spec, "ids must be non-negative"));
            }
            return Err(SpecError::UnknownUser {
                user: user_arg.to_string(),
                image: image.to_string(),
            });
        }
    };

    let mut supplementary = Vec::new();
    if let Some(group_arg) = group_arg {
        let numeric_gid = parse_id(group_arg);
        let found = db
            .group()?
            .iter()
            .find(|g| match numeric_gid {
                Some(id) => u64::from(g.gid) == id,
                None => g.name == group_arg,
            })
            .map(|g| g.gid);
        gid = match (found, numeric_gid) {
            (Some(g), _) => g,
            (None, Some(g)) => check_range("user", spec, g)?,
            (None, None) => {
                return Err(SpecError::UnknownGroup {
                    group: group_arg.to_string(),
                    image: image.to_string(),
                })
            }
        };
    } else if let Some(name) = &matched_name {
        supplementary = db
            .group()?
            .iter()
            .filter(|g| g.members.iter().any(|m| m == name))
            .map(|g| g.gid)
            .collect();
    }

    let mut added = Vec::with_capacity(group_add.len());
    for entry in group_add {
        let numeric = parse_id(entry);
        let found = db
            .group()?
            .iter()
            .find(|g| match numeric {
                Some(id) => u64::from(g.gid) == id,
                None => g.name == *entry,
            })
            .map(|g| g.gid);
        added.push(match (found, numeric) {
            (Some(g), _) => g,
            (None, Some(g)) => check_range("group_add", entry, g)?,
            (None, None) => {
                return Err(SpecError::UnknownGroup {
                    group: entry.clone(),
                    image: image.to_string(),
                })
            }
        });
    }

    let mut additional_gids = Vec::with_capacity(1 + supplementary.len() + added.len());
    for g in std::iter::once(gid).chain(supplementary).chain(added) {
        if !additional_gids.contains(&g) {
            additional_gids.push(g);
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home: if home.is_empty() {
            "/".to_string()
        } else {
            home
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io;

    /// An in-memory root for the resolution rules; the real readers are tested in `rootfs`.
    struct Mem(BTreeMap<&'static str, &'static str>);

    impl RootfsView for Mem {
        fn read_file(&self, path: &str, limit: u64) -> io::Result<Option<Vec<u8>>> {
            match self.0.get(path) {
                Some(c) if c.len() as u64 > limit => {
                    Err(io::Error::new(io::ErrorKind::InvalidData, "too large"))
                }
                Some(c) => Ok(Some(c.as_bytes().to_vec())),
                None => Ok(None),
            }
        }
    }

    const PASSWD: &str = "\
# comment
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
app:x:1000:1000:App:/home/app:/bin/sh
broken:x:abc:0::/:/bin/sh
nohome:x:1001:1001
app:x:2000:2000:second app:/elsewhere:/bin/sh
";
    const GROUP: &str = "\
root:x:0:
wheel:x:10:root,app
app:x:1000:
staff:x:50: app , daemon
audio:x:29:
nohome:x:1001:
";

    fn image() -> Mem {
        Mem(BTreeMap::from([
            ("/etc/passwd", PASSWD),
            ("/etc/group", GROUP),
        ]))
    }

    fn resolve(spec: &str) -> Result<ResolvedUser, SpecError> {
        resolve_user(spec, &[], &image(), "example/app:1")
    }

    #[test]
    fn parses_databases_leniently_but_never_as_root() {
        let p = parse_passwd(PASSWD.as_bytes());
        assert_eq!(p.len(), 5);
        assert!(p.iter().all(|e| e.name != "broken"));
        assert_eq!(p[3].home, "");
        let g = parse_group(GROUP.as_bytes());
        assert_eq!(g[3].members, vec!["app", "daemon"]);
        assert!(parse_passwd(b"\xff\xfe:x:0:0::/:\n").is_empty());
        assert!(parse_passwd(b":x:0:0::/:\n").is_empty());
    }

    #[test]
    fn default_is_root_with_its_groups() {
        let u = resolve("").unwrap();
        assert_eq!((u.uid, u.gid), (0, 0));
        assert_eq!(u.additional_gids, vec![0, 10]);
        assert_eq!(u.home, "/root");
    }

    #[test]
    fn by_name() {
        let u = resolve("app").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        // Primary first, then every group listing "app", in file order.
        assert_eq!(u.additional_gids, vec![1000, 10, 50]);
        assert_eq!(u.home, "/home/app");
    }

    #[test]
    fn by_uid_with_an_entry_uses_the_entry() {
        let u = resolve("1").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1, 1, "/usr/sbin"));
        assert_eq!(u.additional_gids, vec![1, 50]);
    }

    #[test]
    fn by_uid_without_an_entry() {
        let u = resolve("4242").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 0, "/"));
        assert_eq!(u.additional_gids, vec![0]);
    }

    #[test]
    fn explicit_group_replaces_gid_and_drops_supplementary_groups() {
        let u = resolve("app:audio").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 29));
        assert_eq!(u.additional_gids, vec![29]);
        let u = resolve("1000:4000").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 4000));
        let u = resolve("4242:staff").unwrap();
        assert_eq!((u.uid, u.gid), (4242, 50));
        let u = resolve("app:").unwrap();
        assert_eq!(u.additional_gids, vec![1000, 10, 50]);
    }

    #[test]
    fn first_matching_line_wins() {
        assert_eq!(resolve("app").unwrap().home, "/home/app");
        assert_eq!(resolve("2000").unwrap().home, "/elsewhere");
    }

    #[test]
    fn empty_home_becomes_root_dir() {
        assert_eq!(resolve("nohome").unwrap().home, "/");
    }

    #[test]
    fn unknown_names_name_the_user_and_image() {
        let err = resolve("ghost").unwrap_err();
        assert!(matches!(&err, SpecError::UnknownUser { user, .. } if user == "ghost"));
        let msg = err.to_string();
        assert!(
            msg.contains("ghost") && msg.contains("example/app:1"),
            "{msg}"
        );
        let err = resolve("app:ghosts").unwrap_err();
        assert!(matches!(&err, SpecError::UnknownGroup { group, .. } if group == "ghosts"));
        assert!(err.to_string().contains("example/app:1"));
    }

    #[test]
    fn bad_forms_are_refused() {
        for bad in [
            "a:b:c",
            "-1",
            "4294967295",
            "99999999999999999999999",
            "1:2147483648",
            "ro\not",
        ] {
            let err = resolve(bad).unwrap_err();
            assert!(
                matches!(err, SpecError::Invalid { field: "user", .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn group_add_by_name_and_number() {
        let u = resolve_user(
            "app",
            &["audio".into(), "777".into(), "wheel".into()],
            &image(),
            "img",
        )
        .unwrap();
        assert_eq!(u.additional_gids, vec![1000, 10, 50, 29, 777]);
        let err = resolve_user("app", &["nogroup".into()], &image(), "img").unwrap_err();
        assert!(matches!(err, SpecError::UnknownGroup { .. }));
    }

    #[test]
    fn without_databases() {
        let empty = Mem(BTreeMap::new());
        let u = resolve_user("", &[], &empty, "scratch").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (0, 0, "/"));
        assert_eq!(u.additional_gids, vec![0]);
        let u = resolve_user("1000:1000", &[], &empty, "scratch").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        let err = resolve_user("root", &[], &empty, "scratch").unwrap_err();
        assert!(err.to_string().contains("scratch"));
    }

    #[test]
    fn read_errors_name_the_file_and_image() {
        let huge: &'static str = Box::leak("x".repeat(MAX_DB_FILE as usize + 1).into_boxed_str());
        let m = Mem(BTreeMap::from([("/etc/passwd", huge)]));
        let err = resolve_user("", &[], &m, "big").unwrap_err();
        assert!(matches!(&err, SpecError::Rootfs { path, .. } if path == "/etc/passwd"));
        assert!(err.to_string().contains("big"));
    }
}
