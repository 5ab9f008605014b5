//! Copying files to and from a node over SFTP, streamed in chunks (large enough for
//! libssh2 to pipeline its requests) so no file is held in memory.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

use ssh2::{FileStat, OpenFlags, OpenType};

use super::{Connection, SshError};
use crate::fsutil;

/// Bytes per read and write; libssh2 splits them into pipelined SFTP requests.
const CHUNK_BYTES: usize = 256 * 1024;

impl Connection {
    /// Copies the local file `local` to `remote` on the node, which ends up with exactly
    /// the permission bits `mode` (e.g. `0o600`), whatever the node's umask.
    pub fn upload(&self, local: &Path, remote: &str, mode: u32) -> Result<(), SshError> {
        let error = |source: io::Error| SshError::Upload {
            node: self.node.clone(),
            local: local.to_owned(),
            remote: remote.to_owned(),
            source,
        };
        let mut source = File::open(local).map_err(error)?;
        let sftp = self.session.sftp().map_err(|e| error(e.into()))?;
        let flags = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE;
        let mode_bits = i32::try_from(mode & 0o7777).unwrap_or(0o600);
        let mut file = sftp
            .open_mode(Path::new(remote), flags, mode_bits, OpenType::File)
            .map_err(|e| error(e.into()))?;
        copy(&mut source, &mut file).map_err(error)?;
        // The mode given to open is masked by the umask and ignored for an existing file.
        let perm = FileStat {
            size: None,
            uid: None,
            gid: None,
            perm: Some(mode),
            atime: None,
            mtime: None,
        };
        file.setstat(perm).and_then(|()| file.close()).map_err(|e| error(e.into()))
    }

    /// Copies `remote` on the node to the local file `local` (mode 0600), replacing it
    /// only once the whole file has arrived.
    pub fn download(&self, remote: &str, local: &Path) -> Result<(), SshError> {
        let error = |source: io::Error| SshError::Download {
            node: self.node.clone(),
            remote: remote.to_owned(),
            local: local.to_owned(),
            source,
        };
        let sftp = self.session.sftp().map_err(|e| error(e.into()))?;
        let mut file = sftp.open(Path::new(remote)).map_err(|e| error(e.into()))?;
        let mut part = local.as_os_str().to_owned();
        part.push(".part");
        let part = Path::new(&part);
        let result = (|| {
            let mut target = fsutil::create_private_file(part)?;
            copy(&mut file, &mut target)?;
            target.sync_all()?;
            fs::rename(part, local)
        })();
        if result.is_err() {
            let _ = fs::remove_file(part);
        }
        result.map_err(error)
    }
}

/// Copies `from` to `to` in [`CHUNK_BYTES`] chunks.
fn copy(from: &mut dyn Read, to: &mut dyn Write) -> io::Result<()> {
    let mut buf = vec![0; CHUNK_BYTES];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return to.flush(),
            Ok(n) => to.write_all(&buf[..n])?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
