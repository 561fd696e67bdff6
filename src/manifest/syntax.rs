//! Compose's short syntaxes and units, parsed the way compose-go (and the Docker libraries it
//! calls) parse them: durations (Go `time.ParseDuration`, plus `d`/`w`), byte sizes
//! (`go-units.RAMInBytes`), shell words (`go-shellwords`), port specs (`nat.ParsePortSpec`),
//! volume specs (`format.ParseVolume`), project names.

use std::net::IpAddr;
use std::time::Duration;

use super::model::{PortMode, PortRange, Protocol};

/// Go's `time.ParseDuration` (plus `d` = 24h and `w` = 7d, as compose's str2duration). Negative
/// durations are refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!("invalid duration {s:?} (expected a number with a unit, like 1m30s, 10s or 500ms)")
    };
    let mut rest = s;
    if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    }
    if rest.starts_with('-') {
        return Err(format!("invalid duration {s:?}: must not be negative"));
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(num_end);
        if num.is_empty() || num == "." {
            return Err(bad());
        }
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let nanos_per: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            "w" => 604_800_000_000_000,
            _ => return Err(bad()),
        };
        let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
        if frac.contains('.') {
            return Err(bad());
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let mut value = whole.checked_mul(nanos_per).ok_or_else(bad)?;
        if !frac.is_empty() {
            let digits = frac.len().min(30) as u32;
            let f: u128 = frac[..digits as usize].parse().map_err(|_| bad())?;
            value += f * nanos_per / 10u128.pow(digits);
        }
        total = total.checked_add(value).ok_or_else(bad)?;
        rest = tail;
    }
    // Go's Duration is an int64 of nanoseconds.
    if total > i64::MAX as u128 {
        return Err(bad());
    }
    Ok(Duration::from_nanos(total as u64))
}

/// `go-units.RAMInBytes`: `512`, `64m`, `1.5GiB`, `640kb`, `1 g` (binary multiples).
pub fn parse_bytes(s: &str) -> Result<i64, String> {
    let bad =
        || format!("invalid size {s:?} (expected bytes or a number with a unit: b, k, m, g, t, p)");
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
        i += 1;
    }
    let (num, mut unit) = s.split_at(i);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') {
        return Err(bad());
    }
    if let Some(u) = unit.strip_prefix(' ') {
        unit = u;
    }
    let lower = unit.to_ascii_lowercase();
    let mut u = lower.as_str();
    let mult: f64 = match u.chars().next() {
        Some(c @ ('k' | 'm' | 'g' | 't' | 'p')) => {
            u = &u[1..];
            match c {
                'k' => 1024.0,
                'm' => 1024.0 * 1024.0,
                'g' => 1024.0 * 1024.0 * 1024.0,
                't' => 1024.0 * 1024.0 * 1024.0 * 1024.0,
                _ => 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0,
            }
        }
        _ => 1.0,
    };
    let u = u.strip_prefix('i').unwrap_or(u);
    let u = u.strip_prefix('b').unwrap_or(u);
    if !u.is_empty() {
        return Err(bad());
    }
    let value: f64 = num.parse().map_err(|_| bad())?;
    let bytes = value * mult;
    if !bytes.is_finite() || bytes > i64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as i64)
}

/// The result of splitting a command string like compose (go-shellwords).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellWords {
    pub words: Vec<String>,
    /// Set when parsing stopped at an unquoted `;`, `&`, `|`, `<` or `>`: compose silently
    /// drops the rest, dockmaster warns.
    pub dropped_from: Option<usize>,
}

/// go-shellwords `Parse` without environment or backtick expansion.
pub fn shell_split(line: &str) -> Result<ShellWords, String> {
    let invalid =
        || format!("invalid command line string {line:?} (unbalanced quotes or parenthesis)");
    let mut args = Vec::new();
    let mut buf = String::new();
    let (mut escaped, mut dq, mut sq, mut bq, mut dollar) = (false, false, false, false, false);
    let mut got = false;
    let mut dropped_from = None;
    for (i, r) in line.char_indices() {
        if escaped {
            escaped = false;
            if bq || dollar {
                buf.push('\\');
                buf.push(r);
                got = true;
                continue;
            }
            buf.push(match r {
                't' => '\t',
                'n' => '\n',
                other => other,
            });
            got = true;
            continue;
        }
        if r == '\\' {
            if sq {
                buf.push(r);
            } else {
                escaped = true;
            }
            continue;
        }
        if matches!(r, ' ' | '\t' | '\r' | '\n') {
            if sq || dq || bq || dollar {
                buf.push(r);
            } else if got {
                args.push(std::mem::take(&mut buf));
                got = false;
            }
            continue;
        }
        match r {
            '`' if !sq && !dq && !dollar => bq = !bq,
            ')' if !sq && !dq && !bq => {
                if !dollar {
                    return Err(invalid());
                }
                buf.push(r);
                dollar = false;
                got = true;
                continue;
            }
            '(' if !sq && !dq && !bq => {
                if !dollar && buf.ends_with('$') && !buf.ends_with("\\$") {
                    dollar = true;
                    buf.push('(');
                    continue;
                }
                return Err(invalid());
            }
            '"' if !sq && !dollar && !bq => {
                if dq {
                    got = true;
                }
                dq = !dq;
                continue;
            }
            '\'' if !dq && !dollar && !bq => {
                if sq {
                    got = true;
                }
                sq = !sq;
                continue;
            }
            ';' | '&' | '|' | '<' | '>' if !(sq || dq || bq || dollar) => {
                let mut pos = i;
                if r == '>' && !buf.is_empty() && buf.chars().all(|c| c.is_ascii_digit()) {
                    pos -= buf.len();
                    got = false;
                }
                dropped_from = Some(pos);
                break;
            }
            _ => {}
        }
        got = true;
        buf.push(r);
    }
    if got {
        args.push(buf);
    }
    if escaped || sq || dq || bq || dollar {
        return Err(invalid());
    }
    Ok(ShellWords {
        words: args,
        dropped_from,
    })
}

/// One entry of a port short syntax, before it becomes a `model::Port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    pub host_ip: Option<IpAddr>,
    pub target: u16,
    pub published: Option<PortRange>,
    pub protocol: Protocol,
    pub mode: PortMode,
}

/// Docker's `nat.ParsePortSpec` as compose uses it: `[[IP:]HOST:]CONTAINER[/PROTO]` with
/// ranges, expanded to one entry per container port, sorted like compose sorts them.
pub fn parse_port_spec(raw: &str) -> Result<Vec<PortSpec>, String> {
    let parts: Vec<&str> = raw.split(':').collect();
    let n = parts.len();
    let container = parts[n - 1];
    let (ip, host) = match n {
        1 => (String::new(), ""),
        2 => (String::new(), parts[0]),
        3 => (parts[0].to_string(), parts[1]),
        _ => (parts[..n - 2].join(":"), parts[n - 2]),
    };
    let (container, proto) = match container.split_once('/') {
        Some((c, p)) => (c, p),
        None => (container, "tcp"),
    };
    let ip = if let Some(inner) = ip.strip_prefix('[') {
        inner
            .strip_suffix(']')
            .ok_or_else(|| format!("invalid IP address: {ip}"))?
            .to_string()
    } else {
        ip
    };
    let host_ip = if ip.is_empty() {
        None
    } else {
        Some(
            ip.parse::<IpAddr>()
                .map_err(|_| format!("invalid IP address: {ip}"))?,
        )
    };
    if container.is_empty() {
        return Err(format!("no port specified: {raw}<empty>"));
    }
    let (start, end) =
        parse_port_range(container).map_err(|_| format!("invalid containerPort: {container}"))?;
    let (hstart, hend) = if host.is_empty() {
        (0, 0)
    } else {
        parse_port_range(host).map_err(|_| format!("invalid hostPort: {host}"))?
    };
    if !host.is_empty() && (end - start) != (hend - hstart) && end != start {
        return Err(format!(
            "invalid ranges specified for container and host Ports: {container} and {host}"
        ));
    }
    let protocol = match proto.to_ascii_lowercase().as_str() {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "sctp" => Protocol::Sctp,
        _ => return Err(format!("invalid proto: {proto}")),
    };
    let mut out = Vec::new();
    for i in 0..=(end - start) {
        let target = start + i;
        let published = if host.is_empty() {
            None
        } else if start == end && hstart != hend {
            Some(PortRange {
                start: hstart,
                end: hend,
            })
        } else {
            let p = hstart + i;
            Some(PortRange { start: p, end: p })
        };
        out.push(PortSpec {
            host_ip,
            target,
            published,
            protocol,
            mode: PortMode::Ingress,
        });
    }
    // compose sorts the expanded entries by their "PORT/PROTO" key as strings.
    out.sort_by_cached_key(|p| format!("{}/{}", p.target, p.protocol.as_str()));
    Ok(out)
}

/// `PORT` or `START-END`, each 0..=65535, start <= end.
pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let parse = |v: &str| -> Result<u16, String> {
        if v.is_empty() || !v.bytes().all(|c| c.is_ascii_digit()) {
            return Err(format!("invalid port {v:?}"));
        }
        v.parse::<u16>().map_err(|_| format!("invalid port {v:?}"))
    };
    let (start, end) = (parse(a)?, parse(b)?);
    if end < start {
        return Err(format!("invalid port range {s:?}"));
    }
    Ok((start, end))
}

/// A volume short syntax, split (compose's `format.ParseVolume`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeSpec {
    pub source: String,
    pub target: String,
    pub read_only: bool,
    pub nocopy: bool,
    pub propagation: Option<String>,
    pub selinux: Option<String>,
    /// True when `source` is a path (bind mount), false for a named/anonymous volume.
    pub is_bind: bool,
    /// Options compose ignores silently (dockmaster warns).
    pub unknown_options: Vec<String>,
}

/// Parses `[SOURCE:]TARGET[:OPTIONS]` (Windows drive letters kept together).
pub fn parse_volume_spec(spec: &str) -> Result<VolumeSpec, String> {
    let mut v = VolumeSpec::default();
    match spec.chars().count() {
        0 => return Err("invalid empty volume spec".to_string()),
        1 | 2 => {
            v.target = spec.to_string();
            return Ok(v);
        }
        _ => {}
    }
    let mut buffer = String::new();
    let mut depth = 0usize;
    let chars: Vec<char> = spec.chars().collect();
    let mut fields: Vec<String> = Vec::new();
    for (i, &c) in chars.iter().chain(std::iter::once(&'\0')).enumerate() {
        if c == '$' && chars.get(i + 1) == Some(&'{') {
            depth += 1;
            buffer.push(c);
            continue;
        }
        if c == '}' && depth > 0 {
            depth -= 1;
            buffer.push(c);
            continue;
        }
        let windows_drive =
            c == ':' && buffer.chars().count() == 1 && buffer.chars().all(char::is_alphabetic);
        if windows_drive {
            buffer.push(c);
        } else if (c == ':' || c == '\0') && depth == 0 {
            if buffer.is_empty() {
                return Err(format!(
                    "invalid spec: {spec}: empty section between colons"
                ));
            }
            fields.push(std::mem::take(&mut buffer));
            if fields.len() > 3 {
                return Err(format!("invalid spec: {spec}: too many colons"));
            }
        } else {
            buffer.push(c);
        }
    }
    match fields.len() {
        1 => v.target = fields.remove(0),
        _ => {
            v.source = fields.remove(0);
            v.target = fields.remove(0);
        }
    }
    if let Some(opts) = fields.pop() {
        for o in opts.split(',') {
            match o {
                "ro" => v.read_only = true,
                "rw" => v.read_only = false,
                "nocopy" => v.nocopy = true,
                "rprivate" | "private" | "rshared" | "shared" | "rslave" | "slave" => {
                    v.propagation = Some(o.to_string())
                }
                "z" | "Z" => v.selinux = Some(o.to_string()),
                other => v.unknown_options.push(other.to_string()),
            }
        }
    }
    v.is_bind = is_file_path(&v.source);
    Ok(v)
}

fn is_file_path(source: &str) -> bool {
    let mut chars = source.chars();
    match chars.next() {
        None => false,
        Some('.' | '/' | '~') => true,
        Some(_) if source.starts_with("\\\\") => true,
        Some(first) => first.is_alphabetic() && chars.next() == Some(':'),
    }
}

/// compose's `NormalizeProjectName`: lower case, only `[a-z0-9_-]`, no leading `_`/`-`.
pub fn normalize_project_name(s: &str) -> String {
    let lower = s.to_lowercase();
    let kept: String = lower
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-')
        .collect();
    kept.trim_start_matches(['_', '-']).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration(".5s").unwrap(), Duration::from_millis(500));
        for bad in ["", "10", "1x", "-1s", "s", "1..5s", "99999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("512m").unwrap(), 536870912);
        assert_eq!(parse_bytes("640kb").unwrap(), 655360);
        assert_eq!(parse_bytes("2gb").unwrap(), 2147483648);
        assert_eq!(parse_bytes("50M").unwrap(), 52428800);
        assert_eq!(parse_bytes("1.5GiB").unwrap(), 1610612736);
        assert_eq!(parse_bytes("1 g").unwrap(), 1073741824);
        assert_eq!(parse_bytes("100").unwrap(), 100);
        for bad in ["", "m", "1x", "-1", "1.2.3m", "1kk"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shell_words() {
        let w = |s: &str| shell_split(s).unwrap().words;
        assert_eq!(
            w("bundle exec thin -p 3000"),
            ["bundle", "exec", "thin", "-p", "3000"]
        );
        assert_eq!(
            w(r#"sh -c "echo 'a b'" x"#),
            ["sh", "-c", "echo 'a b'", "x"]
        );
        assert_eq!(w(r"echo a\ b"), ["echo", "a b"]);
        assert_eq!(w("echo ''"), ["echo", ""]);
        assert_eq!(w("echo $(date)"), ["echo", "$(date)"]);
        let cut = shell_split("echo a && echo b").unwrap();
        assert_eq!(cut.words, ["echo", "a"]);
        assert_eq!(cut.dropped_from, Some(7));
        assert!(shell_split("echo 'a").is_err());
        assert!(shell_split("echo (a)").is_err());
    }

    #[test]
    fn ports() {
        let p = parse_port_spec("127.0.0.1:8080:80/udp").unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(p[0].target, 80);
        assert_eq!(
            p[0].published,
            Some(PortRange {
                start: 8080,
                end: 8080
            })
        );
        assert_eq!(p[0].protocol, Protocol::Udp);
        let r = parse_port_spec("80-82:8080-8082").unwrap();
        assert_eq!(
            r.iter().map(|p| p.target).collect::<Vec<_>>(),
            [8080, 8081, 8082]
        );
        assert_eq!(r[2].published.unwrap().start, 82);
        let dynamic = parse_port_spec("8000-8010:80").unwrap();
        assert_eq!(
            dynamic[0].published,
            Some(PortRange {
                start: 8000,
                end: 8010
            })
        );
        let v6 = parse_port_spec("[::1]:53:53").unwrap();
        assert_eq!(v6[0].host_ip, Some("::1".parse().unwrap()));
        assert!(parse_port_spec("5432").unwrap()[0].published.is_none());
        assert_eq!(
            parse_port_spec("98-101")
                .unwrap()
                .iter()
                .map(|p| p.target)
                .collect::<Vec<_>>(),
            [100, 101, 98, 99]
        );
        for bad in [
            "",
            "abc",
            "80:70000",
            "1-3:1-2",
            "8080:80/xyz",
            "300.1.1.1:80:80",
            "82-80",
        ] {
            assert!(parse_port_spec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn volumes() {
        let v = parse_volume_spec("./data:/data:ro,z").unwrap();
        assert!(v.is_bind && v.read_only);
        assert_eq!((v.source.as_str(), v.target.as_str()), ("./data", "/data"));
        assert_eq!(v.selinux.as_deref(), Some("z"));
        let n = parse_volume_spec("data:/var/lib/data:nocopy").unwrap();
        assert!(!n.is_bind && n.nocopy);
        let anon = parse_volume_spec("/var/cache").unwrap();
        assert!(anon.source.is_empty() && !anon.is_bind);
        let win = parse_volume_spec("C:\\data:/data").unwrap();
        assert!(win.is_bind);
        assert_eq!(win.source, "C:\\data");
        assert!(parse_volume_spec("ab:cd:ef:gh").is_err());
        assert!(parse_volume_spec("ab::cd").is_err());
    }

    #[test]
    fn project_names() {
        assert_eq!(normalize_project_name("My App.v2"), "myappv2");
        assert_eq!(normalize_project_name("__x-1"), "x-1");
    }
}
