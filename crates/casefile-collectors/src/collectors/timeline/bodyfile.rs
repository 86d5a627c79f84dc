//! One line of a Sleuth Kit bodyfile (3.x, the format `mactime` reads):
//! `MD5|name|inode|mode_as_string|UID|GID|size|atime|mtime|ctime|crtime`.
//!
//! Names are escaped so that a line can never be split or forged, whatever bytes a file
//! name holds: `\` becomes `\\`; `|` (the field separator), `>` (so that ` -> ` appears
//! only between a link and its target), control characters (newline, tab, DEL, the C1
//! range) and bytes that are not UTF-8 become `\xHH`, one escape per byte. Everything
//! else, UTF-8 letters included, is written as is. [`unescape`] gives the original bytes
//! back. (TSK's `fls -m` replaces control characters with `^` and leaves `|`, which loses
//! the name and lets a name add fields.)

use std::io::{self, Write};

use super::walk::Meta;

/// Appends `name` escaped as described in the module documentation.
pub(crate) fn escape_into(out: &mut Vec<u8>, name: &[u8]) {
    let plain = |b: &u8| (0x20..0x7f).contains(b) && !matches!(b, b'|' | b'\\' | b'>');
    if name.iter().all(plain) {
        out.extend_from_slice(name);
        return;
    }
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            let mut utf8 = [0u8; 4];
            let bytes = c.encode_utf8(&mut utf8).as_bytes();
            if c == '\\' {
                out.extend_from_slice(b"\\\\");
            } else if c.is_control() || c == '|' || c == '>' {
                bytes.iter().for_each(|&b| hex_escape(out, b));
            } else {
                out.extend_from_slice(bytes);
            }
        }
        chunk.invalid().iter().for_each(|&b| hex_escape(out, b));
    }
}

fn hex_escape(out: &mut Vec<u8>, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(&[b'\\', b'x', HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0xf)]]);
}

/// The bytes an escaped name stands for; `None` for text [`escape_into`] cannot produce.
/// (Readers of the package undo the escaping the same way; the tests hold it to that.)
#[cfg(test)]
pub(crate) fn unescape(escaped: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(escaped.len());
    let mut i = 0;
    while i < escaped.len() {
        match (escaped[i], escaped.get(i + 1)) {
            (b'\\', Some(b'\\')) => {
                out.push(b'\\');
                i += 2;
            }
            (b'\\', Some(b'x')) => {
                let hex = std::str::from_utf8(escaped.get(i + 2..i + 4)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 4;
            }
            (b'\\', _) | (b'|' | b'\n', _) => return None,
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// `r/rrwxr-xr-x` as TSK writes it: the entry type, `/`, the type again and the
/// permissions in `ls -l` form (`s`/`S`, `t`/`T` for setuid, setgid and sticky).
pub(crate) fn mode_string(mode: u32) -> [u8; 12] {
    let kind = type_char(mode);
    let mut out = [kind, b'/', kind, b'-', b'-', b'-', b'-', b'-', b'-', b'-', b'-', b'-'];
    for (i, c) in [b'r', b'w', b'x'].iter().cycle().take(9).enumerate() {
        if mode & (0o400 >> i) != 0 {
            out[3 + i] = *c;
        }
    }
    for (bit, at, set) in [(0o4000, 5, b's'), (0o2000, 8, b's'), (0o1000, 11, b't')] {
        if mode & bit != 0 {
            out[at] = if out[at] == b'x' { set } else { set.to_ascii_uppercase() };
        }
    }
    out
}

/// TSK's one-letter type: `r` file, `d` directory, `l` link, `c`/`b` devices, `p` FIFO,
/// `s` socket, `-` unknown.
pub(crate) fn type_char(mode: u32) -> u8 {
    match mode & 0o170000 {
        0o100000 => b'r',
        0o040000 => b'd',
        0o120000 => b'l',
        0o020000 => b'c',
        0o060000 => b'b',
        0o010000 => b'p',
        0o140000 => b's',
        _ => b'-',
    }
}

/// Writes the line of the entry whose escaped host path is `shown`; `link` is the
/// escaped target of a symbolic link.
pub(crate) fn write_line(out: &mut dyn Write, shown: &[u8], meta: &Meta, link: Option<&[u8]>) -> io::Result<()> {
    let mut line = Vec::with_capacity(shown.len() + 96);
    line.extend_from_slice(b"0|");
    line.extend_from_slice(if shown.is_empty() { b"/" } else { shown });
    if let Some(target) = link {
        line.extend_from_slice(b" -> ");
        line.extend_from_slice(target);
    }
    line.push(b'|');
    let crtime = meta.btime.unwrap_or(0);
    write!(line, "{}|", meta.ino)?;
    line.extend_from_slice(&mode_string(meta.mode));
    writeln!(line, "|{}|{}|{}|{}|{}|{}|{}", meta.uid, meta.gid, meta.size, meta.atime, meta.mtime, meta.ctime, crtime)?;
    out.write_all(&line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(name: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        escape_into(&mut out, name);
        out
    }

    #[test]
    fn hostile_names_cannot_split_or_forge_a_line_and_round_trip() {
        let names: [&[u8]; 8] = [
            b"plain.txt",
            b"a|b|1|r/rrwxrwxrwx|0|0|0|0|0|0|0",
            b"line\nbreak\r\t",
            b"not utf8 \xff\xfe end",
            b"back\\slash \\x41",
            b"fake -> /etc/shadow",
            "caf\u{e9} \u{85}nel".as_bytes(),
            b"\x7f",
        ];
        for name in names {
            let out = escaped(name);
            assert!(!out.contains(&b'|') && !out.contains(&b'\n') && !out.contains(&b'>'), "{out:?}");
            assert!(std::str::from_utf8(&out).is_ok());
            assert_eq!(unescape(&out).as_deref(), Some(name), "{}", String::from_utf8_lossy(&out));
        }
        assert_eq!(escaped(b"a|b"), b"a\\x7cb");
        assert_eq!(escaped("caf\u{e9}".as_bytes()), "caf\u{e9}".as_bytes());
        assert_eq!(unescape(b"bad\\q"), None);
    }

    #[test]
    fn modes_read_like_tsk() {
        assert_eq!(&mode_string(0o100755), b"r/rrwxr-xr-x");
        assert_eq!(&mode_string(0o104755), b"r/rrwsr-xr-x");
        assert_eq!(&mode_string(0o102644), b"r/rrw-r-Sr--");
        assert_eq!(&mode_string(0o041777), b"d/drwxrwxrwt");
        assert_eq!(&mode_string(0o120777), b"l/lrwxrwxrwx");
        assert_eq!(&mode_string(0o010600), b"p/prw-------");
        assert_eq!(&mode_string(0o140755), b"s/srwxr-xr-x");
    }
}
