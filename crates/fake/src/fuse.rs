//! The FUSE wire protocol, as the kernel speaks it on `/dev/fuse` (`include/uapi/linux/fuse.h`),
//! for a file system of a few fixed files: requests are decoded from what one `read(2)` of the
//! device returns, replies are encoded for one `write(2)`.
//!
//! Only the operations such a file system meets are decoded; every other request is
//! [`Request::Other`], which the server answers with `ENOSYS` (the kernel then stops asking,
//! or does the work itself: flush, fsync, access, xattrs, locks, statx; a file it cannot poll
//! is always ready). Layouts are those of ABI 7.31, the version the server announces; the
//! kernel adapts to it.

use std::fmt;

/// The root directory's node id.
pub const ROOT: u64 = 1;

/// The ABI version the server speaks.
pub const MAJOR: u32 = 7;
/// The newest minor version whose layouts this module writes.
pub const MINOR: u32 = 31;

/// Opcodes (`enum fuse_opcode`).
pub mod opcode {
    #![allow(missing_docs)]
    pub const LOOKUP: u32 = 1;
    pub const FORGET: u32 = 2;
    pub const GETATTR: u32 = 3;
    pub const SETATTR: u32 = 4;
    pub const SYMLINK: u32 = 6;
    pub const MKNOD: u32 = 8;
    pub const MKDIR: u32 = 9;
    pub const UNLINK: u32 = 10;
    pub const RMDIR: u32 = 11;
    pub const RENAME: u32 = 12;
    pub const LINK: u32 = 13;
    pub const OPEN: u32 = 14;
    pub const READ: u32 = 15;
    pub const WRITE: u32 = 16;
    pub const STATFS: u32 = 17;
    pub const RELEASE: u32 = 18;
    pub const INIT: u32 = 26;
    pub const OPENDIR: u32 = 27;
    pub const READDIR: u32 = 28;
    pub const RELEASEDIR: u32 = 29;
    pub const CREATE: u32 = 35;
    pub const INTERRUPT: u32 = 36;
    pub const DESTROY: u32 = 38;
    pub const BATCH_FORGET: u32 = 42;
    pub const RENAME2: u32 = 45;
    pub const TMPFILE: u32 = 51;
}

/// `FOPEN_DIRECT_IO`: reads and writes bypass the page cache, one request per call.
pub const FOPEN_DIRECT_IO: u32 = 1 << 0;
/// `FOPEN_NONSEEKABLE`.
pub const FOPEN_NONSEEKABLE: u32 = 1 << 2;
/// `FOPEN_STREAM`: no file position at all, as a character device.
pub const FOPEN_STREAM: u32 = 1 << 4;

/// `FUSE_ATOMIC_O_TRUNC`: `O_TRUNC` comes with the open instead of a separate truncation.
pub const INIT_ATOMIC_O_TRUNC: u32 = 1 << 3;
/// `FUSE_BIG_WRITES`: writes larger than a page.
pub const INIT_BIG_WRITES: u32 = 1 << 5;

/// `struct fuse_in_header`'s size.
pub const IN_HEADER: usize = 40;
/// `struct fuse_out_header`'s size.
const OUT_HEADER: usize = 16;

/// The header of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The opcode.
    pub opcode: u32,
    /// The request's id, echoed in its reply.
    pub unique: u64,
    /// The node the request is about.
    pub nodeid: u64,
    /// The caller's pid, in the pid namespace of the process that mounted the file system.
    pub pid: u32,
}

/// A decoded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    /// `FUSE_INIT`.
    Init {
        /// The kernel's major version.
        major: u32,
        /// The kernel's minor version.
        minor: u32,
        /// Its read-ahead limit.
        max_readahead: u32,
        /// The capabilities it offers.
        flags: u32,
    },
    /// `FUSE_LOOKUP` of a name in the node.
    Lookup {
        /// The name, without its NUL.
        name: &'a [u8],
    },
    /// `FUSE_FORGET`, `FUSE_BATCH_FORGET`: never answered.
    Forget,
    /// `FUSE_GETATTR`.
    GetAttr,
    /// `FUSE_SETATTR` (answered with the attributes, unchanged).
    SetAttr,
    /// `FUSE_OPEN`.
    Open {
        /// The `open(2)` flags.
        flags: u32,
    },
    /// `FUSE_READ`.
    Read {
        /// The open file.
        fh: u64,
        /// At most this many bytes.
        size: u32,
        /// The file's status flags (`O_NONBLOCK`).
        flags: u32,
    },
    /// `FUSE_WRITE`.
    Write {
        /// The open file.
        fh: u64,
        /// The bytes.
        data: &'a [u8],
        /// The file's status flags (`O_NONBLOCK`).
        flags: u32,
    },
    /// `FUSE_STATFS`.
    StatFs,
    /// `FUSE_RELEASE`: the last reference to an open file is gone.
    Release {
        /// The open file.
        fh: u64,
    },
    /// `FUSE_OPENDIR`.
    OpenDir,
    /// `FUSE_READDIR`.
    ReadDir {
        /// Entries before this offset were read already.
        offset: u64,
        /// The reply's size limit.
        size: u32,
    },
    /// `FUSE_RELEASEDIR`.
    ReleaseDir,
    /// `FUSE_INTERRUPT`: the caller of a request got a signal.
    Interrupt {
        /// The interrupted request.
        unique: u64,
    },
    /// `FUSE_DESTROY`.
    Destroy,
    /// A request that would change the directory (create, link, remove, rename).
    Modify,
    /// Anything else.
    Other,
}

/// A request the kernel would never send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed FUSE request (opcode {opcode}, {length} bytes)")]
pub struct Malformed {
    /// The opcode, 0 when the header itself is short.
    pub opcode: u32,
    /// The message's length.
    pub length: usize,
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(buf: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(buf.get(at..at + 8)?.try_into().ok()?))
}

/// The id of a request too malformed to decode, to answer it with an error all the same.
pub fn unique(message: &[u8]) -> Option<u64> {
    u64_at(message, 8)
}

/// Decode one request.
pub fn parse(message: &[u8]) -> Result<(Header, Request<'_>), Malformed> {
    let short = |opcode| Malformed { opcode, length: message.len() };
    let header = (|| {
        Some(Header {
            opcode: u32_at(message, 4)?,
            unique: u64_at(message, 8)?,
            nodeid: u64_at(message, 16)?,
            pid: u32_at(message, 32)?,
        })
    })()
    .filter(|_| message.len() >= IN_HEADER)
    .ok_or(short(0))?;
    let body = &message[IN_HEADER..];
    let request = decode(header.opcode, body).ok_or(short(header.opcode))?;
    Ok((header, request))
}

fn decode(op: u32, body: &[u8]) -> Option<Request<'_>> {
    Some(match op {
        opcode::INIT => Request::Init {
            major: u32_at(body, 0)?,
            minor: u32_at(body, 4)?,
            max_readahead: u32_at(body, 8)?,
            flags: u32_at(body, 12)?,
        },
        opcode::LOOKUP => {
            let end = body.iter().position(|&b| b == 0)?;
            Request::Lookup { name: &body[..end] }
        }
        opcode::FORGET | opcode::BATCH_FORGET => Request::Forget,
        opcode::GETATTR => Request::GetAttr,
        opcode::SETATTR => Request::SetAttr,
        opcode::OPEN => Request::Open { flags: u32_at(body, 0)? },
        opcode::READ => Request::Read { fh: u64_at(body, 0)?, size: u32_at(body, 16)?, flags: u32_at(body, 32)? },
        opcode::WRITE => {
            let size = usize::try_from(u32_at(body, 16)?).ok()?;
            Request::Write { fh: u64_at(body, 0)?, data: body.get(40..40 + size)?, flags: u32_at(body, 32)? }
        }
        opcode::STATFS => Request::StatFs,
        opcode::RELEASE => Request::Release { fh: u64_at(body, 0)? },
        opcode::OPENDIR => Request::OpenDir,
        opcode::READDIR => Request::ReadDir { offset: u64_at(body, 8)?, size: u32_at(body, 16)? },
        opcode::RELEASEDIR => Request::ReleaseDir,
        opcode::INTERRUPT => Request::Interrupt { unique: u64_at(body, 0)? },
        opcode::DESTROY => Request::Destroy,
        opcode::SYMLINK
        | opcode::MKNOD
        | opcode::MKDIR
        | opcode::UNLINK
        | opcode::RMDIR
        | opcode::RENAME
        | opcode::LINK
        | opcode::CREATE
        | opcode::RENAME2
        | opcode::TMPFILE => Request::Modify,
        _ => Request::Other,
    })
}

/// A reply (or notification) being encoded.
struct Out(Vec<u8>);

impl Out {
    fn new(unique: u64, error: i32, body: usize) -> Out {
        let mut out = Out(Vec::with_capacity(OUT_HEADER + body));
        out.u32(0); // the length, set by `done`
        out.0.extend_from_slice(&error.to_ne_bytes());
        out.u64(unique);
        out
    }

    fn u16(&mut self, value: u16) {
        self.0.extend_from_slice(&value.to_ne_bytes());
    }

    fn u32(&mut self, value: u32) {
        self.0.extend_from_slice(&value.to_ne_bytes());
    }

    fn u64(&mut self, value: u64) {
        self.0.extend_from_slice(&value.to_ne_bytes());
    }

    fn zeros(&mut self, n: usize) {
        self.0.resize(self.0.len() + n, 0);
    }

    fn done(mut self) -> Vec<u8> {
        let len = u32::try_from(self.0.len()).unwrap_or(u32::MAX);
        self.0[..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

/// A reply with an error (`errno`, positive).
pub fn error(unique: u64, errno: i32) -> Vec<u8> {
    Out::new(unique, -errno, 0).done()
}

/// A reply with no data, or with `data` as it is (`FUSE_READ`).
pub fn data(unique: u64, data: &[u8]) -> Vec<u8> {
    let mut out = Out::new(unique, 0, data.len());
    out.0.extend_from_slice(data);
    out.done()
}

/// What `stat(2)` shows of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// The inode number (the node id).
    pub ino: u64,
    /// Type and permission bits.
    pub mode: u32,
    /// Links.
    pub nlink: u32,
    /// Times, in seconds since the epoch.
    pub time: u64,
}

impl Attr {
    /// `struct fuse_attr` (ABI 7.9 and later: 88 bytes).
    fn encode(&self, out: &mut Out) {
        out.u64(self.ino);
        out.u64(0); // size
        out.u64(0); // blocks
        for _ in 0..3 {
            out.u64(self.time); // atime, mtime, ctime
        }
        out.zeros(12); // their nanoseconds
        out.u32(self.mode);
        out.u32(self.nlink);
        out.u32(0); // uid: root of the mounter's user namespace
        out.u32(0); // gid
        out.u32(0); // rdev
        out.u32(4096); // blksize
        out.u32(0); // flags
    }
}

/// How long the kernel may cache names and attributes, in seconds: they never change.
const VALID: u64 = 24 * 3600;

/// The reply to `FUSE_LOOKUP`: `struct fuse_entry_out`.
pub fn entry(unique: u64, attr: &Attr) -> Vec<u8> {
    let mut out = Out::new(unique, 0, 128);
    out.u64(attr.ino); // nodeid
    out.u64(0); // generation
    out.u64(VALID); // entry_valid
    out.u64(VALID); // attr_valid
    out.zeros(8); // their nanoseconds
    attr.encode(&mut out);
    out.done()
}

/// The reply to `FUSE_GETATTR` and `FUSE_SETATTR`: `struct fuse_attr_out`.
pub fn attr(unique: u64, attr: &Attr) -> Vec<u8> {
    let mut out = Out::new(unique, 0, 104);
    out.u64(VALID);
    out.zeros(8); // attr_valid_nsec, dummy
    attr.encode(&mut out);
    out.done()
}

/// The reply to `FUSE_OPEN` and `FUSE_OPENDIR`: `struct fuse_open_out`.
pub fn open(unique: u64, fh: u64, open_flags: u32) -> Vec<u8> {
    let mut out = Out::new(unique, 0, 16);
    out.u64(fh);
    out.u32(open_flags);
    out.u32(0);
    out.done()
}

/// The reply to `FUSE_WRITE`: `struct fuse_write_out`, how many bytes were taken.
pub fn written(unique: u64, size: u32) -> Vec<u8> {
    let mut out = Out::new(unique, 0, 8);
    out.u32(size);
    out.u32(0);
    out.done()
}

/// The reply to `FUSE_STATFS`: an empty file system of 4 KiB blocks.
pub fn statfs(unique: u64) -> Vec<u8> {
    let mut out = Out::new(unique, 0, 80);
    out.zeros(40); // blocks, bfree, bavail, files, ffree
    out.u32(4096); // bsize
    out.u32(255); // namelen
    out.u32(4096); // frsize
    out.zeros(28); // padding, spare
    out.done()
}

/// What the server settles in `FUSE_INIT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitReply {
    /// The minor version spoken (at most [`MINOR`]).
    pub minor: u32,
    /// The read-ahead limit (the kernel's).
    pub max_readahead: u32,
    /// The capabilities taken (among those offered).
    pub flags: u32,
    /// The largest write request.
    pub max_write: u32,
}

/// The reply to `FUSE_INIT`: `struct fuse_init_out` (64 bytes).
pub fn init(unique: u64, reply: &InitReply) -> Vec<u8> {
    let mut out = Out::new(unique, 0, 64);
    out.u32(MAJOR);
    out.u32(reply.minor);
    out.u32(reply.max_readahead);
    out.u32(reply.flags);
    out.u16(16); // max_background
    out.u16(12); // congestion_threshold
    out.u32(reply.max_write);
    out.u32(1); // time_gran
    out.zeros(64 - 28);
    out.done()
}

/// A directory entry's type (`DT_*`), as `readdir(3)` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    /// `DT_DIR`.
    Dir,
    /// `DT_REG`.
    File,
}

/// The reply to `FUSE_READDIR`: `struct fuse_dirent`s, each padded to 8 bytes, that fit in
/// `size`; entry `i` (counted from 0) has offset `i + 1`.
pub fn dirents<'a>(
    unique: u64,
    entries: impl IntoIterator<Item = (u64, &'a [u8], EntryType)>,
    offset: u64,
    size: u32,
) -> Vec<u8> {
    let mut out = Out::new(unique, 0, 0);
    let limit = OUT_HEADER + usize::try_from(size).unwrap_or(usize::MAX);
    for (index, (ino, name, kind)) in (0u64..).zip(entries) {
        if index < offset {
            continue;
        }
        let record = (24 + name.len()).next_multiple_of(8);
        if out.0.len() + record > limit {
            break;
        }
        out.u64(ino);
        out.u64(index + 1);
        out.u32(u32::try_from(name.len()).unwrap_or(0));
        out.u32(match kind {
            EntryType::Dir => u32::from(libc::DT_DIR),
            EntryType::File => u32::from(libc::DT_REG),
        });
        out.0.extend_from_slice(name);
        out.zeros(record - 24 - name.len());
    }
    out.done()
}

impl fmt::Display for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "opcode {} unique {} node {}", self.opcode, self.unique, self.nodeid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(opcode: u32, unique: u64, nodeid: u64, body: &[u8]) -> Vec<u8> {
        let mut message = Vec::new();
        message.extend_from_slice(&u32::try_from(IN_HEADER + body.len()).expect("small").to_ne_bytes());
        message.extend_from_slice(&opcode.to_ne_bytes());
        message.extend_from_slice(&unique.to_ne_bytes());
        message.extend_from_slice(&nodeid.to_ne_bytes());
        message.extend_from_slice(&[0u8; 8]); // uid, gid
        message.extend_from_slice(&77u32.to_ne_bytes()); // pid
        message.extend_from_slice(&[0u8; 4]);
        message.extend_from_slice(body);
        message
    }

    #[test]
    fn requests_decode_as_the_kernel_lays_them_out() {
        let mut write_in = Vec::new();
        write_in.extend_from_slice(&9u64.to_ne_bytes()); // fh
        write_in.extend_from_slice(&0u64.to_ne_bytes()); // offset
        write_in.extend_from_slice(&3u32.to_ne_bytes()); // size
        write_in.extend_from_slice(&[0u8; 12]); // write_flags, lock_owner
        write_in.extend_from_slice(&(libc::O_NONBLOCK as u32).to_ne_bytes()); // flags
        write_in.extend_from_slice(&[0u8; 4]);
        write_in.extend_from_slice(b"abc");
        let message = request(opcode::WRITE, 5, 2, &write_in);
        let (header, parsed) = parse(&message).expect("valid");
        assert_eq!(header, Header { opcode: opcode::WRITE, unique: 5, nodeid: 2, pid: 77 });
        assert_eq!(parsed, Request::Write { fh: 9, data: b"abc", flags: libc::O_NONBLOCK as u32 });

        let message = request(opcode::LOOKUP, 6, ROOT, b"org.nixos.ntd.out\0");
        assert_eq!(parse(&message).expect("valid").1, Request::Lookup { name: b"org.nixos.ntd.out" });
        let message = request(opcode::INTERRUPT, 7 | 1, 0, &5u64.to_ne_bytes());
        assert_eq!(parse(&message).expect("valid").1, Request::Interrupt { unique: 5 });
        assert_eq!(parse(&request(1234, 8, 1, b"")).expect("valid").1, Request::Other);

        // A write shorter than its size, a header cut short.
        write_in.truncate(write_in.len() - 1);
        assert!(parse(&request(opcode::WRITE, 5, 2, &write_in)).is_err());
        assert_eq!(parse(&message[..20]), Err(Malformed { opcode: 0, length: 20 }));
    }

    #[test]
    fn replies_have_the_kernels_sizes() {
        let attr = Attr { ino: 2, mode: libc::S_IFREG | 0o600, nlink: 1, time: 1 };
        assert_eq!(entry(1, &attr).len(), 16 + 128);
        assert_eq!(super::attr(1, &attr).len(), 16 + 104);
        assert_eq!(open(1, 3, FOPEN_DIRECT_IO).len(), 16 + 16);
        assert_eq!(init(1, &InitReply { minor: 31, max_readahead: 0, flags: 0, max_write: 4096 }).len(), 16 + 64);
        assert_eq!(statfs(1).len(), 16 + 80);
        let reply = error(42, libc::EBUSY);
        assert_eq!(reply.len(), 16);
        assert_eq!(i32::from_ne_bytes(reply[4..8].try_into().expect("4 bytes")), -libc::EBUSY);
        assert_eq!(u64::from_ne_bytes(reply[8..16].try_into().expect("8 bytes")), 42);
    }

    #[test]
    fn directory_entries_are_padded_and_resume_at_their_offset() {
        let names: [(u64, &[u8], EntryType); 3] =
            [(1, b".", EntryType::Dir), (1, b"..", EntryType::Dir), (2, b"org.nixos.ntd.ctl", EntryType::File)];
        let all = dirents(1, names, 0, 4096);
        assert_eq!(all.len(), 16 + 32 + 32 + 48);
        let rest = dirents(1, names, 2, 4096);
        assert_eq!(rest.len(), 16 + 48);
        assert_eq!(u64::from_ne_bytes(rest[24..32].try_into().expect("8 bytes")), 3, "its offset");
        assert_eq!(dirents(1, names, 0, 40).len(), 16 + 32, "only what fits");
    }
}
