//! The uncompressed kernel (`vmlinux`, an ELF) inside a `bzImage`, for the VMMs that boot
//! only that (Firecracker; Cloud Hypervisor's PVH boot).
//!
//! A bzImage is real-mode setup code followed by a protected-mode stub that decompresses
//! its payload. Its boot header (boot protocol 2.08 and later) says where the payload lies
//! (`payload_offset`, `payload_length`, from the start of the protected-mode code); the
//! payload's first bytes say how it is compressed. Debian's kernels use LZ4 (legacy frame)
//! or XZ; gzip and zstd are also common.

use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest kernel produced (an uncompressed kernel is tens of MiB).
const MAX_VMLINUX: u64 = 512 << 20;

#[derive(Debug, thiserror::Error)]
pub enum VmlinuxError {
    #[error("{0} is not a bzImage (no HdrS boot header)")]
    NotBzImage(String),
    #[error("{0}: boot protocol {1:#x} is older than 2.08 (no payload offsets)")]
    OldProtocol(String, u16),
    #[error("{0}: the payload lies outside the file")]
    Truncated(String),
    #[error("{0}: the payload's compression is not one Hearth reads (starts {1:02x?})")]
    UnknownCompression(String, Vec<u8>),
    #[error("{0}: decompressing the {1} payload: {2}")]
    Decompress(String, &'static str, String),
    #[error("{0}: the payload is not an ELF kernel")]
    NotElf(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Whether `bytes` start as an ELF file.
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x7fELF")
}

/// The ELF kernel in the bzImage `image` (`name` names it in errors).
pub fn extract(image: &[u8], name: &str) -> Result<Vec<u8>, VmlinuxError> {
    let u16_at = |o: usize| {
        image
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        image
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    if image.get(0x202..0x206) != Some(b"HdrS") {
        return Err(VmlinuxError::NotBzImage(name.into()));
    }
    let version = u16_at(0x206).unwrap_or(0);
    if version < 0x208 {
        return Err(VmlinuxError::OldProtocol(name.into(), version));
    }
    let setup_sects = match image[0x1f1] {
        0 => 4,
        n => n as usize,
    };
    let truncated = || VmlinuxError::Truncated(name.into());
    let (offset, length) = (
        u32_at(0x248).ok_or_else(truncated)?,
        u32_at(0x24c).ok_or_else(truncated)?,
    );
    let start = (setup_sects + 1) * 512 + offset;
    let payload = image.get(start..start + length).ok_or_else(truncated)?;
    let out = decompress(payload, name)?;
    if !is_elf(&out) {
        return Err(VmlinuxError::NotElf(name.into()));
    }
    Ok(out)
}

fn decompress(payload: &[u8], name: &str) -> Result<Vec<u8>, VmlinuxError> {
    let fail = |kind: &'static str| {
        move |e: &dyn std::fmt::Display| VmlinuxError::Decompress(name.into(), kind, e.to_string())
    };
    let read_all = |mut r: Box<dyn Read + '_>, kind: &'static str| {
        let mut out = Vec::new();
        r.by_ref()
            .take(MAX_VMLINUX)
            .read_to_end(&mut out)
            .map_err(|e| fail(kind)(&e))?;
        Ok::<_, VmlinuxError>(out)
    };
    if payload.starts_with(&[0x1f, 0x8b]) {
        read_all(Box::new(flate2::read::GzDecoder::new(payload)), "gzip")
    } else if payload.starts_with(&[0x02, 0x21, 0x4c, 0x18]) {
        lz4_legacy(&payload[4..]).map_err(|e| fail("lz4")(&e))
    } else if payload.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        let mut out = Vec::new();
        lzma_rs::xz_decompress(&mut std::io::BufReader::new(payload), &mut out)
            .map_err(|e| fail("xz")(&e))?;
        Ok(out)
    } else if payload.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let d = ruzstd::decoding::StreamingDecoder::new(payload).map_err(|e| fail("zstd")(&e))?;
        read_all(Box::new(d), "zstd")
    } else {
        Err(VmlinuxError::UnknownCompression(
            name.into(),
            payload.iter().take(6).copied().collect(),
        ))
    }
}

/// LZ4's legacy frame, as the kernel writes it: blocks of (little-endian compressed size,
/// block), each at most 8 MiB uncompressed, until the data (or a new frame's magic) ends.
/// The kernel appends the uncompressed size, which reads as a too-short last block.
fn lz4_legacy(mut data: &[u8]) -> Result<Vec<u8>, String> {
    const BLOCK: usize = 8 << 20;
    let mut out = Vec::new();
    while data.len() > 4 {
        let size = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if size == 0x184c_2102 {
            data = &data[4..];
            continue;
        }
        let Some(block) = data.get(4..4 + size) else {
            break; // the trailing uncompressed size
        };
        let mut chunk = vec![0u8; BLOCK];
        let n = lz4_flex::block::decompress_into(block, &mut chunk).map_err(|e| e.to_string())?;
        out.extend_from_slice(&chunk[..n]);
        if out.len() as u64 > MAX_VMLINUX {
            return Err(format!("larger than {} MiB", MAX_VMLINUX >> 20));
        }
        data = &data[4 + size..];
    }
    Ok(out)
}

/// The ELF kernel for `kernel` (a bzImage, or already an ELF), kept in `cache_dir` under a
/// name made of the kernel's file name, size and modification time, so it is extracted
/// once per kernel. Returns `kernel` itself when it is an ELF.
pub fn cached(kernel: &Path, cache_dir: &Path) -> Result<PathBuf, VmlinuxError> {
    let mut head = [0u8; 4];
    std::fs::File::open(kernel)?.read_exact(&mut head)?;
    if is_elf(&head) {
        return Ok(kernel.to_path_buf());
    }
    let meta = std::fs::metadata(kernel)?;
    let stamp = meta
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let file_name = kernel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "kernel".into());
    let out = cache_dir.join(format!("vmlinux-{file_name}-{}-{stamp}", meta.len()));
    if out.exists() {
        return Ok(out);
    }
    let vmlinux = extract(&std::fs::read(kernel)?, &kernel.display().to_string())?;
    std::fs::create_dir_all(cache_dir)?;
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, vmlinux)?;
    std::fs::rename(&tmp, &out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A bzImage around `payload`: one setup sector, then the protected-mode code, whose
    /// payload starts 16 bytes in.
    fn bzimage(payload: &[u8]) -> Vec<u8> {
        let mut img = vec![0u8; 1024 + 16];
        img[0x1f1] = 1;
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        img[0x248..0x24c].copy_from_slice(&16u32.to_le_bytes());
        img[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        img.extend_from_slice(payload);
        img.extend_from_slice(b"trailing stub code");
        img
    }

    fn elf() -> Vec<u8> {
        let mut e = b"\x7fELF\x02\x01\x01".to_vec();
        e.extend((0..100_000u32).map(|i| (i % 251) as u8));
        e
    }

    #[test]
    fn gzip_and_lz4_payloads_come_out_as_the_elf_they_hold() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&elf()).unwrap();
        let img = bzimage(&gz.finish().unwrap());
        assert_eq!(extract(&img, "k").unwrap(), elf());

        let block = lz4_flex::block::compress(&elf());
        let mut lz4 = vec![0x02, 0x21, 0x4c, 0x18];
        lz4.extend_from_slice(&(block.len() as u32).to_le_bytes());
        lz4.extend_from_slice(&block);
        lz4.extend_from_slice(&(elf().len() as u32).to_le_bytes());
        assert_eq!(extract(&bzimage(&lz4), "k").unwrap(), elf());
    }

    #[test]
    fn what_is_not_a_bzimage_is_refused_with_the_reason() {
        assert!(matches!(
            extract(&[0u8; 4096], "k"),
            Err(VmlinuxError::NotBzImage(_))
        ));
        assert!(matches!(
            extract(&bzimage(b"PLAIN TEXT"), "k"),
            Err(VmlinuxError::UnknownCompression(..))
        ));
        let mut short = bzimage(b"\x1f\x8b");
        short[0x24c..0x250].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            extract(&short, "k"),
            Err(VmlinuxError::Truncated(_))
        ));
    }

    /// The host's own kernels, as the agent finds them for its guests.
    #[test]
    fn the_hosts_kernel_yields_an_x86_64_elf_once() {
        let Some(kernel) = std::fs::read_dir("/boot").ok().and_then(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .find(|p| p.to_string_lossy().contains("vmlinuz-"))
        }) else {
            eprintln!("skipped: no /boot/vmlinuz-* on this host");
            return;
        };
        let cache = tempfile::tempdir().unwrap();
        let out = cached(&kernel, cache.path()).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert!(is_elf(&bytes));
        assert_eq!(bytes[4], 2, "64-bit");
        assert_eq!(u16::from_le_bytes([bytes[18], bytes[19]]), 0x3e, "x86-64");
        assert!(bytes.len() as u64 > std::fs::metadata(&kernel).unwrap().len());
        let modified = std::fs::metadata(&out).unwrap().modified().unwrap();
        assert_eq!(cached(&kernel, cache.path()).unwrap(), out);
        assert_eq!(
            std::fs::metadata(&out).unwrap().modified().unwrap(),
            modified,
            "extracted once"
        );
    }
}
