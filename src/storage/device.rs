//! A block device: what a log that manages its own bytes (the Raft log) writes to. The
//! simulated disk in simulation ([`super::SimDisk`]), a file in real mode, or memory.
//!
//! Writes are visible to reads at once and durable only after [`BlockDevice::sync`]; what a
//! crash keeps of unsynced writes is the device's business (see [`super::simdisk`]).

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A byte-addressed device with an explicit sync.
pub trait BlockDevice: Send + Sync + std::fmt::Debug {
    /// The device's length in bytes (one past the last byte written).
    fn len(&self) -> io::Result<u64>;
    /// Whether nothing was ever written.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Fills `out` from `offset`; an error if that runs past the end.
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()>;
    /// Writes `data` at `offset`, growing the device if needed.
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Makes every write so far durable.
    fn sync(&self) -> io::Result<()>;
    /// Latency the device charged since the last call, for the caller to sleep off in
    /// simulated time (zero for real devices, whose latency is real).
    fn take_latency(&self) -> Duration {
        Duration::ZERO
    }
}

/// A shared device.
pub type DynDevice = Arc<dyn BlockDevice>;

/// A device in memory: everything written is durable (it lives as long as the process).
#[derive(Debug, Default)]
pub struct MemoryDevice {
    bytes: Mutex<Vec<u8>>,
}

impl MemoryDevice {
    /// An empty device.
    pub fn new() -> Self {
        Self::default()
    }

    fn bytes(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.bytes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn past_end(offset: u64, len: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("read of {len} bytes at {offset} past the end"),
    )
}

impl BlockDevice for MemoryDevice {
    fn len(&self) -> io::Result<u64> {
        Ok(self.bytes().len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let bytes = self.bytes();
        let start = usize::try_from(offset).map_err(|_| past_end(offset, out.len()))?;
        let src = start
            .checked_add(out.len())
            .and_then(|end| bytes.get(start..end))
            .ok_or_else(|| past_end(offset, out.len()))?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut bytes = self.bytes();
        let start = usize::try_from(offset).map_err(|_| io::Error::other("offset overflows"))?;
        let end = start
            .checked_add(data.len())
            .ok_or_else(|| io::Error::other("write past the addressable end"))?;
        if end > bytes.len() {
            bytes.resize(end, 0);
        }
        bytes[start..end].copy_from_slice(data);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}

/// A device on a real file.
#[derive(Debug)]
pub struct FileDevice {
    file: Mutex<File>,
}

impl FileDevice {
    /// Opens (or creates) the file at `path`. A file it creates is made durable in its
    /// folder before this returns, so a power cut cannot take the file away with what a
    /// later sync wrote to it.
    pub fn open(path: &Path) -> io::Result<Self> {
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        if let Some(parent) = parent {
            std::fs::create_dir_all(parent)?;
        }
        let existed = path.exists();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if !existed {
            #[cfg(unix)]
            std::fs::File::open(parent.unwrap_or(Path::new(".")))?.sync_all()?;
        }
        Ok(Self {
            file: Mutex::new(file),
        })
    }

    fn file(&self) -> std::sync::MutexGuard<'_, File> {
        self.file.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl BlockDevice for FileDevice {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file().metadata()?.len())
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = self.file();
        f.seek(SeekFrom::Start(offset))?;
        f.read_exact(out)
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = self.file();
        f.seek(SeekFrom::Start(offset))?;
        f.write_all(data)
    }

    fn sync(&self) -> io::Result<()> {
        self.file().sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(dev: &dyn BlockDevice) {
        assert!(dev.is_empty().unwrap());
        dev.write(10, b"abc").unwrap();
        assert_eq!(dev.len().unwrap(), 13);
        let mut out = [9u8; 13];
        dev.read(0, &mut out).unwrap();
        assert_eq!(&out[..10], &[0; 10]);
        assert_eq!(&out[10..], b"abc");
        dev.sync().unwrap();
        let mut past = [0u8; 4];
        assert!(
            dev.read(11, &mut past).is_err(),
            "a read past the end fails"
        );
    }

    #[test]
    fn memory_and_file_devices_agree() {
        exercise(&MemoryDevice::new());
        let dir = tempfile::tempdir().unwrap();
        exercise(&FileDevice::open(&dir.path().join("d/log")).unwrap());
    }
}
