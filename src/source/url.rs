//! Git URLs: which transport, where, and how to show them without credentials.
//!
//! Accepted forms: `https://`, `http://`, `ssh://` (also `git+ssh://`, `ssh+git://`),
//! scp-like `[user@]host:path`, `git://`, `file://` and plain local paths.

use std::fmt;

/// The transport a URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Https,
    Http,
    Ssh,
    Git,
    /// `file://` or a plain path.
    Local,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Https => "https",
            Transport::Http => "http",
            Transport::Ssh => "ssh",
            Transport::Git => "git",
            Transport::Local => "file",
        })
    }
}

/// A parsed git URL.
#[derive(Clone, PartialEq, Eq)]
pub struct GitUrl {
    pub transport: Transport,
    /// User name from the URL's userinfo (percent-decoded for http(s)).
    pub user: Option<String>,
    /// Password from the URL's userinfo (percent-decoded for http(s)); never shown.
    pub password: Option<String>,
    /// Host without brackets (`::1` for `[::1]`); `None` for local paths.
    pub host: Option<String>,
    pub port: Option<u16>,
    /// The URL handed to libgit2: for http(s) without any userinfo (credentials travel in
    /// callbacks only, so libgit2 never sees them and cannot echo them in errors).
    pub connect: String,
    /// The URL for logs, errors and status (see [`display_url`]).
    pub display: String,
}

// Debug without the password: errors and logs may print a GitUrl.
impl fmt::Debug for GitUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitUrl")
            .field("transport", &self.transport)
            .field("user", &self.user.as_ref().map(|_| "<redacted>"))
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("display", &self.display)
            .finish()
    }
}

impl GitUrl {
    /// Parses `url`; the error says what is wrong without repeating credentials.
    pub fn parse(url: &str) -> Result<GitUrl, String> {
        if url.is_empty() {
            return Err("the url is empty".into());
        }
        if url.chars().any(|c| c.is_control() || c == ' ') {
            return Err("the url contains spaces or control characters".into());
        }
        let display = display_url(url);
        if let Some((scheme, rest)) = url.split_once("://") {
            let transport = match scheme.to_ascii_lowercase().as_str() {
                "https" => Transport::Https,
                "http" => Transport::Http,
                "ssh" | "git+ssh" | "ssh+git" => Transport::Ssh,
                "git" => Transport::Git,
                "file" => Transport::Local,
                other => {
                    return Err(format!(
                        "unsupported scheme {other:?} (https, http, ssh, git, file)"
                    ))
                }
            };
            let (authority, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, ""),
            };
            let (userinfo, hostport) = match authority.rfind('@') {
                Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
                None => (None, authority),
            };
            if transport == Transport::Local {
                if userinfo.is_some() || !(hostport.is_empty() || hostport == "localhost") {
                    return Err("a file:// url has no host (file:///path)".into());
                }
                if path.is_empty() {
                    return Err("the url has no path".into());
                }
                return Ok(GitUrl {
                    transport,
                    user: None,
                    password: None,
                    host: None,
                    port: None,
                    connect: url.to_string(),
                    display,
                });
            }
            let (host, port) = split_host_port(hostport)?;
            if path.len() <= 1 {
                return Err("the url has no repository path".into());
            }
            let http = matches!(transport, Transport::Http | Transport::Https);
            let (user, password) = match userinfo {
                None => (None, None),
                Some(ui) => {
                    let (u, p) = match ui.split_once(':') {
                        Some((u, p)) => (u, Some(p)),
                        None => (ui, None),
                    };
                    if http {
                        (Some(percent_decode(u)?), p.map(percent_decode).transpose()?)
                    } else {
                        (Some(u.to_string()), p.map(str::to_string))
                    }
                }
            };
            match transport {
                Transport::Git if user.is_some() => {
                    return Err("git:// urls carry no credentials".into())
                }
                Transport::Ssh if password.is_some() => {
                    return Err("ssh urls cannot carry a password; use a key".into())
                }
                _ => {}
            }
            let connect = if http {
                // The same URL minus its userinfo.
                let mut c = format!("{}://{}", scheme.to_ascii_lowercase(), hostport);
                c.push_str(path);
                c
            } else {
                url.to_string()
            };
            return Ok(GitUrl {
                transport,
                user: user.filter(|u| !u.is_empty()),
                password,
                host: Some(host),
                port,
                connect,
                display,
            });
        }
        if is_scp_like(url) {
            // [user@]host:path, the colon before any slash (git's own rule).
            let colon = scp_colon(url).ok_or("scp-like url without a path")?;
            let slash = url.find('/').unwrap_or(url.len());
            if url[..slash].rfind('@').is_some_and(|at| at > colon) {
                // `user:password@host:path`: git would take `user` for the host.
                return Err("ssh urls cannot carry a password; use a key".into());
            }
            let (left, path) = (&url[..colon], &url[colon + 1..]);
            if path.is_empty() {
                return Err("the url has no repository path".into());
            }
            let (user, host) = match left.rfind('@') {
                Some(i) => (Some(&left[..i]), &left[i + 1..]),
                None => (None, left),
            };
            if user.is_some_and(|u| u.contains(':')) {
                return Err("ssh urls cannot carry a password; use a key".into());
            }
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() {
                return Err("the url has no host".into());
            }
            return Ok(GitUrl {
                transport: Transport::Ssh,
                user: user.filter(|u| !u.is_empty()).map(str::to_string),
                password: None,
                host: Some(host.to_string()),
                port: None,
                connect: url.to_string(),
                display,
            });
        }
        Ok(GitUrl {
            transport: Transport::Local,
            user: None,
            password: None,
            host: None,
            port: None,
            connect: url.to_string(),
            display,
        })
    }
}

/// Whether a scheme-less URL is scp-like (`host:path`) rather than a local path: git's rule
/// is a colon before the first slash, and local paths starting with `/` or `.` stay paths.
fn is_scp_like(url: &str) -> bool {
    !url.starts_with('/') && !url.starts_with('.') && scp_colon(url).is_some()
}

/// The colon separating host and path in an scp-like URL (`[::1]:path` allowed).
fn scp_colon(url: &str) -> Option<usize> {
    let slash = url.find('/').unwrap_or(url.len());
    let search_from = match (url.find('['), url.find(']')) {
        (Some(open), Some(close)) if open < close && close < slash => close,
        _ => 0,
    };
    let colon = search_from + url[search_from..].find(':')?;
    (colon < slash).then_some(colon)
}

fn split_host_port(hostport: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or("unclosed [ in host")?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("garbage after ]")?),
        };
        (h, port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err("the url has no host".into());
    }
    let port = match port {
        None | Some("") => None,
        Some(p) => Some(p.parse::<u16>().map_err(|_| format!("bad port {p:?}"))?),
    };
    Ok((host.to_string(), port))
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("bad percent-encoding in the url's userinfo")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the url's userinfo is not UTF-8".to_string())
}

/// `url` fit for logs, errors and status: http(s), git and file URLs lose their whole
/// userinfo (a token is often put in the user name); ssh URLs keep the user name (not a
/// secret, and part of where the repository is) but lose any password. Works on anything,
/// even unparseable input.
pub fn display_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let end = rest.find('/').unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let Some(at) = authority.rfind('@') else {
            return url.to_string();
        };
        let userinfo = &authority[..at];
        let hostport = &authority[at + 1..];
        let ssh = matches!(
            scheme.to_ascii_lowercase().as_str(),
            "ssh" | "git+ssh" | "ssh+git"
        );
        if ssh && !userinfo.contains(':') {
            return url.to_string();
        }
        if ssh {
            let user = userinfo.split(':').next().unwrap_or("");
            return format!("{scheme}://{user}@{hostport}{path}");
        }
        return format!("{scheme}://{hostport}{path}");
    }
    // scp-like: user@host:path; a colon inside the userinfo would be a password.
    let end = url.find('/').unwrap_or(url.len());
    if let Some(at) = url[..end].rfind('@') {
        if url[..at].contains(':') {
            return url[at + 1..].to_string();
        }
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_strips_http_userinfo_entirely() {
        assert_eq!(
            display_url("https://user:s3cret@git.example.com/org/repo.git"),
            "https://git.example.com/org/repo.git"
        );
        assert_eq!(
            display_url("https://ghp_TOKEN@github.com/o/r"),
            "https://github.com/o/r"
        );
        assert_eq!(
            display_url("http://a:b@127.0.0.1:8080/r.git"),
            "http://127.0.0.1:8080/r.git"
        );
        assert_eq!(
            display_url("https://a:b@c@host/p@q"),
            "https://host/p@q",
            "the last @ of the authority ends the userinfo; @ in the path stays"
        );
        assert_eq!(display_url("git://host/r.git"), "git://host/r.git");
        assert_eq!(display_url("https://host"), "https://host");
    }

    #[test]
    fn display_keeps_ssh_user_but_not_password() {
        assert_eq!(
            display_url("ssh://git@host:2222/r.git"),
            "ssh://git@host:2222/r.git"
        );
        assert_eq!(
            display_url("ssh://git:pw@host/r.git"),
            "ssh://git@host/r.git"
        );
        assert_eq!(display_url("git@host:org/r.git"), "git@host:org/r.git");
        assert_eq!(display_url("git:pw@host:org/r.git"), "host:org/r.git");
        assert_eq!(display_url("/srv/git/r.git"), "/srv/git/r.git");
    }

    #[test]
    fn parse_https_moves_credentials_out_of_the_connect_url() {
        let u = GitUrl::parse("https://us%40er:p%3Ass@host:8443/r.git").unwrap();
        assert_eq!(u.transport, Transport::Https);
        assert_eq!(u.user.as_deref(), Some("us@er"));
        assert_eq!(u.password.as_deref(), Some("p:ss"));
        assert_eq!(u.host.as_deref(), Some("host"));
        assert_eq!(u.port, Some(8443));
        assert_eq!(u.connect, "https://host:8443/r.git");
        assert_eq!(u.display, "https://host:8443/r.git");
        let dbg = format!("{u:?}");
        assert!(!dbg.contains("p:ss") && !dbg.contains("us@er"), "{dbg}");
    }

    #[test]
    fn parse_ssh_forms() {
        let u = GitUrl::parse("ssh://git@[::1]:2222/srv/r.git").unwrap();
        assert_eq!(u.transport, Transport::Ssh);
        assert_eq!(u.host.as_deref(), Some("::1"));
        assert_eq!(u.port, Some(2222));
        assert_eq!(u.user.as_deref(), Some("git"));
        let u = GitUrl::parse("git@github.com:org/repo.git").unwrap();
        assert_eq!(u.transport, Transport::Ssh);
        assert_eq!(u.host.as_deref(), Some("github.com"));
        assert_eq!(u.port, None);
        assert_eq!(u.user.as_deref(), Some("git"));
        assert_eq!(u.connect, "git@github.com:org/repo.git");
        let u = GitUrl::parse("host.example:repo").unwrap();
        assert_eq!(u.transport, Transport::Ssh);
        assert_eq!(u.user, None);
        assert!(GitUrl::parse("ssh://u:pw@host/r").is_err());
        assert!(GitUrl::parse("u:pw@host:r").is_err());
    }

    #[test]
    fn parse_local_and_git_forms() {
        let u = GitUrl::parse("file:///srv/git/r.git").unwrap();
        assert_eq!(u.transport, Transport::Local);
        assert_eq!(u.host, None);
        assert_eq!(
            GitUrl::parse("/srv/git/r.git").unwrap().transport,
            Transport::Local
        );
        assert_eq!(
            GitUrl::parse("./a:b/r.git").unwrap().transport,
            Transport::Local,
            "a leading ./ keeps a path with a colon local"
        );
        assert_eq!(
            GitUrl::parse("dir/a:b").unwrap().transport,
            Transport::Local,
            "a slash before the colon means a path"
        );
        let u = GitUrl::parse("git://127.0.0.1:9418/r.git").unwrap();
        assert_eq!(u.transport, Transport::Git);
        assert_eq!(u.port, Some(9418));
        assert!(GitUrl::parse("git://u@host/r").is_err());
        assert!(GitUrl::parse("file://host/r").is_err());
    }

    #[test]
    fn parse_rejects_garbage() {
        assert!(GitUrl::parse("").is_err());
        assert!(GitUrl::parse("ftp://host/r").is_err());
        assert!(GitUrl::parse("https://host/r\n.git").is_err());
        assert!(GitUrl::parse("https://host:99999/r").is_err());
        assert!(GitUrl::parse("https://host").is_err());
        assert!(GitUrl::parse("https://%zz@host/r").is_err());
        let e = GitUrl::parse("ftp://user:hunter2@host/r").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
