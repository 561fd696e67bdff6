//! A streaming tar reader with bounded metadata: ustar, GNU (`L`/`K` long names) and PAX
//! (local records, `SCHILY.xattr.*`). It follows Go's `archive/tar` (what containerd uses) where
//! formats are ambiguous, never buffers file data, and counts every byte it consumes.

use std::io::{self, Read, Write};

const BLOCK: usize = 512;
/// Go's `maxSpecialFileSize`: PAX records and GNU long names larger than this are refused.
const MAX_SPECIAL: u64 = 1 << 20;

/// What went wrong while reading the archive itself (not while writing files).
#[derive(Debug)]
pub(super) enum TarError {
    /// The underlying stream failed (decompression error, I/O error).
    Read { offset: u64, source: io::Error },
    /// The bytes are not a valid tar archive (bad checksum, truncated, bad numbers).
    Malformed { offset: u64, reason: String },
}

fn malformed(offset: u64, reason: impl Into<String>) -> TarError {
    TarError::Malformed {
        offset,
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
}

/// A point in time as stored in the archive (seconds since the epoch and nanoseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Time {
    pub sec: i64,
    pub nsec: u32,
}

/// One archive member, with long names and PAX records already merged in.
#[derive(Debug)]
pub(super) struct Entry {
    pub name: Vec<u8>,
    pub link: Vec<u8>,
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Bytes of file data that follow (0 for everything but regular files).
    pub size: u64,
    pub mtime: Time,
    pub atime: Option<Time>,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// `SCHILY.xattr.NAME` records, in archive order.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Reads members one at a time; the caller copies or skips each member's data.
pub(super) struct TarReader<R> {
    inner: R,
    /// Bytes consumed from `inner` so far (for error offsets).
    pos: u64,
    /// Data bytes of the current member not yet read.
    remaining: u64,
    /// Padding after the current member's data.
    pad: u64,
    done: bool,
}

/// PAX records (key, value) in archive order.
type PaxRecords = Vec<(Vec<u8>, Vec<u8>)>;

#[derive(Default)]
struct Pending {
    pax: PaxRecords,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R) -> Self {
        TarReader {
            inner,
            pos: 0,
            remaining: 0,
            pad: 0,
            done: false,
        }
    }

    fn read_err(&self, source: io::Error) -> TarError {
        TarError::Read {
            offset: self.pos,
            source,
        }
    }

    /// Reads as many bytes as possible into `buf`; returns how many (short only at EOF).
    fn read_full(&mut self, buf: &mut [u8]) -> Result<usize, TarError> {
        let mut n = 0;
        while n < buf.len() {
            match self.inner.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => {
                    n += k;
                    self.pos += k as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.read_err(e)),
            }
        }
        Ok(n)
    }

    /// Reads and discards `n` bytes; running out of input is a truncated archive.
    fn discard(&mut self, mut n: u64) -> Result<(), TarError> {
        let mut scratch = [0u8; 8192];
        while n > 0 {
            let want = n.min(scratch.len() as u64) as usize;
            let got = self.read_full(&mut scratch[..want])?;
            if got < want {
                return Err(malformed(self.pos, "unexpected end of archive"));
            }
            n -= got as u64;
        }
        Ok(())
    }

    /// Reads the next block; `None` at a clean end of input (no bytes at all).
    fn read_block(&mut self) -> Result<Option<[u8; BLOCK]>, TarError> {
        let mut block = [0u8; BLOCK];
        match self.read_full(&mut block)? {
            0 => Ok(None),
            BLOCK => Ok(Some(block)),
            _ => Err(malformed(self.pos, "truncated header block")),
        }
    }

    /// Reads the whole (small) data of a metadata member (PAX records, GNU long names).
    fn read_special(&mut self, size: u64, what: &str) -> Result<Vec<u8>, TarError> {
        if size > MAX_SPECIAL {
            return Err(malformed(
                self.pos,
                format!("{what} of {size} bytes exceeds the {MAX_SPECIAL} byte limit"),
            ));
        }
        let mut data = vec![0u8; size as usize];
        if self.read_full(&mut data)? < data.len() {
            return Err(malformed(self.pos, "unexpected end of archive"));
        }
        self.remaining = 0;
        let pad = padding(size);
        self.discard(pad)?;
        Ok(data)
    }

    /// Advances to the next member, skipping whatever is left of the current one.
    /// `Ok(None)` at the end of the archive.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, TarError> {
        if self.done {
            return Ok(None);
        }
        let left = self.remaining + self.pad;
        self.remaining = 0;
        self.pad = 0;
        self.discard(left)?;
        let mut pending = Pending::default();
        loop {
            let header_at = self.pos;
            let Some(block) = self.read_block()? else {
                // Go's reader (and so containerd) accepts an archive that simply ends at a
                // member boundary without the end-of-archive blocks.
                self.done = true;
                return Ok(None);
            };
            if block.iter().all(|&b| b == 0) {
                // End of archive: a second zero block (or the end of input) must follow.
                match self.read_block()? {
                    Some(b) if b.iter().any(|&x| x != 0) => {
                        return Err(malformed(
                            header_at,
                            "non-zero block after an end-of-archive block",
                        ))
                    }
                    _ => {}
                }
                self.done = true;
                return Ok(None);
            }
            verify_checksum(&block).map_err(|r| malformed(header_at, r))?;
            let typeflag = block[156];
            let size = parse_numeric(&block[124..136])
                .ok_or_else(|| malformed(header_at, "invalid size field"))?;
            if size < 0 {
                return Err(malformed(header_at, "negative size"));
            }
            let size = size as u64;
            match typeflag {
                b'x' => {
                    let data = self.read_special(size, "PAX header")?;
                    pending.pax = parse_pax(&data).map_err(|r| malformed(header_at, r))?;
                    continue;
                }
                b'g' => {
                    // Global PAX headers: containerd ignores them, and so do we.
                    self.read_special(size, "PAX global header")?;
                    continue;
                }
                b'L' => {
                    let data = self.read_special(size, "GNU long name")?;
                    pending.long_name = Some(cstr_bytes(&data).to_vec());
                    continue;
                }
                b'K' => {
                    let data = self.read_special(size, "GNU long link name")?;
                    pending.long_link = Some(cstr_bytes(&data).to_vec());
                    continue;
                }
                _ => {}
            }
            let entry = self
                .build_entry(&block, size, pending)
                .map_err(|r| malformed(header_at, r))?;
            self.remaining = entry.size;
            self.pad = padding(entry.size);
            return Ok(Some(entry));
        }
    }

    fn build_entry(
        &self,
        block: &[u8; BLOCK],
        size: u64,
        pending: Pending,
    ) -> Result<Entry, String> {
        let magic = &block[257..263];
        let version = &block[263..265];
        // Like Go's reader, the ustar version field is not checked (writers disagree on it).
        let ustar = magic == b"ustar\0";
        let gnu = magic == b"ustar " && version == b" \0";
        let star = ustar && &block[508..512] == b"tar\0";

        let mut name = cstr_bytes(&block[0..100]).to_vec();
        if ustar {
            let prefix = cstr_bytes(if star {
                &block[345..476]
            } else {
                &block[345..500]
            });
            if !prefix.is_empty() {
                let mut full = prefix.to_vec();
                full.push(b'/');
                full.extend_from_slice(&name);
                name = full;
            }
        }
        let mut link = cstr_bytes(&block[157..257]).to_vec();
        let num = |range: std::ops::Range<usize>, what: &str| {
            parse_numeric(&block[range]).ok_or_else(|| format!("invalid {what} field"))
        };
        let mode = num(100..108, "mode")?;
        let mut uid = num(108..116, "uid")?;
        let mut gid = num(116..124, "gid")?;
        let mut mtime = Time {
            sec: num(136..148, "mtime")?,
            nsec: 0,
        };
        let mut atime = None;
        if gnu {
            let a = num(345..357, "atime")?;
            if a != 0 {
                atime = Some(Time { sec: a, nsec: 0 });
            }
        }
        let (mut dev_major, mut dev_minor) = (0, 0);
        if ustar || gnu {
            dev_major = num(329..337, "devmajor")?;
            dev_minor = num(337..345, "devminor")?;
        }
        let mut size = size;

        if let Some(n) = pending.long_name {
            name = n;
        }
        if let Some(l) = pending.long_link {
            link = l;
        }
        let mut xattrs = Vec::new();
        for (key, value) in pending.pax {
            if let Some(x) = key.strip_prefix(b"SCHILY.xattr.") {
                xattrs.push((x.to_vec(), value));
                continue;
            }
            // An empty value removes the record (falls back to the header field).
            if value.is_empty() {
                continue;
            }
            match key.as_slice() {
                b"path" => name = value,
                b"linkpath" => link = value,
                b"size" => size = parse_decimal(&value).ok_or("invalid PAX size")?,
                b"uid" => uid = parse_decimal(&value).ok_or("invalid PAX uid")? as i64,
                b"gid" => gid = parse_decimal(&value).ok_or("invalid PAX gid")? as i64,
                b"mtime" => mtime = parse_pax_time(&value).ok_or("invalid PAX mtime")?,
                b"atime" => atime = Some(parse_pax_time(&value).ok_or("invalid PAX atime")?),
                k if k.starts_with(b"GNU.sparse.") => {
                    return Err("sparse files (GNU.sparse PAX records) are not supported".into())
                }
                _ => {}
            }
        }
        let kind = match block[156] {
            // Go's reader turns an old-style regular entry with a trailing slash into a dir.
            b'\0' if name.ends_with(b"/") => Kind::Dir,
            b'0' | b'\0' | b'7' => Kind::File,
            b'1' => Kind::Hardlink,
            b'2' => Kind::Symlink,
            b'3' => Kind::Char,
            b'4' => Kind::Block,
            b'5' => Kind::Dir,
            b'6' => Kind::Fifo,
            b'S' => return Err("GNU sparse files are not supported".into()),
            t => {
                return Err(format!(
                    "unsupported entry type {:?} for {:?}",
                    t as char,
                    String::from_utf8_lossy(&name)
                ))
            }
        };
        // Like Go's reader: header-only types never carry data, whatever the size field says.
        if kind != Kind::File {
            size = 0;
        }
        let id = |v: i64, what: &str| {
            u32::try_from(v).map_err(|_| format!("{what} {v} is out of range"))
        };
        Ok(Entry {
            name,
            link,
            kind,
            mode: (mode as u64 & 0o7777) as u32,
            uid: id(uid, "uid")?,
            gid: id(gid, "gid")?,
            size,
            mtime,
            atime,
            dev_major: id(dev_major, "device major")?,
            dev_minor: id(dev_minor, "device minor")?,
            xattrs,
        })
    }

    /// Copies the current member's data to `out`, using `buf` (filled fully before each write
    /// so writes are large). Returns the number of bytes copied.
    pub fn copy_data<W: Write>(&mut self, out: &mut W, buf: &mut [u8]) -> Result<u64, CopyError> {
        let mut copied = 0;
        while self.remaining > 0 {
            let want = self.remaining.min(buf.len() as u64) as usize;
            let got = self.read_full(&mut buf[..want]).map_err(CopyError::Tar)?;
            if got == 0 {
                return Err(CopyError::Tar(malformed(
                    self.pos,
                    "unexpected end of archive inside file data",
                )));
            }
            self.remaining -= got as u64;
            out.write_all(&buf[..got]).map_err(CopyError::Write)?;
            copied += got as u64;
        }
        Ok(copied)
    }

    /// Reads the rest of the input (end-of-archive blocks, padding, anything after) so a
    /// hashing reader underneath sees every byte.
    pub fn drain(&mut self, buf: &mut [u8]) -> Result<(), TarError> {
        loop {
            match self.inner.read(buf) {
                Ok(0) => return Ok(()),
                Ok(k) => self.pos += k as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.read_err(e)),
            }
        }
    }
}

/// Copying file data failed: either reading the archive or writing the file.
#[derive(Debug)]
pub(super) enum CopyError {
    Tar(TarError),
    Write(io::Error),
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// The bytes of a NUL-terminated field.
fn cstr_bytes(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(i) => &b[..i],
        None => b,
    }
}

fn verify_checksum(block: &[u8; BLOCK]) -> Result<(), &'static str> {
    let want = parse_numeric(&block[148..156]).ok_or("invalid checksum field")?;
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += b as i64;
        signed += b as i8 as i64;
    }
    // Go accepts either sum: some old tars computed it with signed chars.
    if want == unsigned || want == signed {
        Ok(())
    } else {
        Err("header checksum mismatch")
    }
}

/// Parses a numeric header field: octal text, or GNU base-256 when the high bit is set.
pub(super) fn parse_numeric(b: &[u8]) -> Option<i64> {
    if let Some(&first) = b.first() {
        if first & 0x80 != 0 {
            // Base-256, two's complement: the top bit of the first byte is only a marker.
            let inv: u8 = if first & 0x40 != 0 { 0xff } else { 0 };
            let mut x: u64 = 0;
            for (i, &c) in b.iter().enumerate() {
                let mut c = c ^ inv;
                if i == 0 {
                    c &= 0x7f;
                }
                if x >> 56 != 0 {
                    return None;
                }
                x = (x << 8) | c as u64;
            }
            if x >> 63 != 0 {
                return None;
            }
            return Some(if inv == 0xff { !(x as i64) } else { x as i64 });
        }
    }
    // Octal, padded with spaces or NULs on either side.
    let trimmed: &[u8] = {
        let is_pad = |c: &u8| *c == b' ' || *c == 0;
        let start = b.iter().position(|c| !is_pad(c)).unwrap_or(b.len());
        let end = b.iter().rposition(|c| !is_pad(c)).map_or(start, |e| e + 1);
        &b[start..end]
    };
    if trimmed.is_empty() {
        return Some(0);
    }
    let mut x: i64 = 0;
    for &c in trimmed {
        if !(b'0'..=b'7').contains(&c) {
            return None;
        }
        x = x.checked_mul(8)?.checked_add((c - b'0') as i64)?;
    }
    Some(x)
}

fn parse_decimal(b: &[u8]) -> Option<u64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// PAX times: `[-]SECONDS[.FRACTION]`.
fn parse_pax_time(b: &[u8]) -> Option<Time> {
    let s = std::str::from_utf8(b).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if secs.is_empty() || !secs.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let mut nsec: u32 = 0;
    for (i, c) in frac.bytes().take(9).enumerate() {
        nsec += (c - b'0') as u32 * 10u32.pow(8 - i as u32);
    }
    if !neg {
        return Some(Time { sec: secs, nsec });
    }
    // -1.25 is one and a quarter seconds before the epoch: sec -2, nsec 0.75e9.
    if nsec == 0 {
        Some(Time {
            sec: -secs,
            nsec: 0,
        })
    } else {
        Some(Time {
            sec: -secs - 1,
            nsec: 1_000_000_000 - nsec,
        })
    }
}

/// Parses PAX records: `LEN KEY=VALUE\n`, LEN counting the whole record.
fn parse_pax(mut data: &[u8]) -> Result<PaxRecords, String> {
    let mut out: PaxRecords = Vec::new();
    while !data.is_empty() {
        // Trailing NUL padding is tolerated (some writers pad the block).
        if data.iter().all(|&b| b == 0) {
            break;
        }
        let sp = data
            .iter()
            .position(|&b| b == b' ')
            .ok_or("invalid PAX record (no length)")?;
        let len = parse_decimal(&data[..sp]).ok_or("invalid PAX record length")? as usize;
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err("invalid PAX record".into());
        }
        let record = &data[sp + 1..len - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or("invalid PAX record (no '=')")?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        if key.is_empty() {
            return Err("invalid PAX record (empty key)".into());
        }
        // A later record for the same key wins.
        out.retain(|(k, _)| k != key);
        out.push((key.to_vec(), value.to_vec()));
        data = &data[len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_fields() {
        assert_eq!(parse_numeric(b"0000644\0"), Some(0o644));
        assert_eq!(parse_numeric(b"  644 \0"), Some(0o644));
        assert_eq!(parse_numeric(b"\0\0\0\0"), Some(0));
        assert_eq!(parse_numeric(b"0008"), None);
        assert_eq!(
            parse_numeric(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
            Some(256)
        );
        assert_eq!(parse_numeric(&[0xff; 8]), Some(-1));
    }

    #[test]
    fn pax_records_and_times() {
        let recs = parse_pax(b"12 path=abc\n18 mtime=1.500000\n").expect("valid records");
        assert_eq!(recs[0], (b"path".to_vec(), b"abc".to_vec()));
        assert_eq!(
            parse_pax_time(b"1.5"),
            Some(Time {
                sec: 1,
                nsec: 500_000_000
            })
        );
        assert_eq!(
            parse_pax_time(b"-1.25"),
            Some(Time {
                sec: -2,
                nsec: 750_000_000
            })
        );
        assert!(parse_pax(b"99 path=abc\n").is_err());
        assert!(parse_pax(b"5 a\n").is_err());
    }
}
