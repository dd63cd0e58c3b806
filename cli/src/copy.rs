//! `reduce import` and `reduce export`: a raw image into the volume or out of it, chunk
//! by chunk, skipping chunks of zeros.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use reduce::{Errno, blocking};

use crate::args::Copy;
use crate::fail::{Failure, io_reason, reason};
use crate::progress::{Progress, rate};
use crate::size::human;
use crate::volume;

/// What a copy did with the chunks it went through.
#[derive(Default)]
struct Counts {
    /// Chunks with data, written or read.
    data: u64,
    /// Chunks of zeros skipped.
    skipped: u64,
    /// Import: chunks of zeros written over data the volume held there.
    cleared: u64,
}

pub fn import(args: &Copy) -> Result<(), Failure> {
    let (file, image_path) = (&args.file, &args.image);
    not_the_same(file, image_path)?;
    let mut image = File::open(image_path).map_err(|e| os_failure(image_path, &e))?;
    // Seeking to the end gives a block device's size too.
    let len = image
        .seek(SeekFrom::End(0))
        .map_err(|e| os_failure(image_path, &e))?;
    let loaded = volume::load(file)?;
    let copied = loaded
        .need_codec(file)
        .and_then(|()| fits(&loaded.vol, file, image_path, len))
        .map(|()| Progress::new("import", len, args.quiet))
        .and_then(|progress| {
            let counts = copy_in(&loaded.vol, &image, len, args, &progress)?;
            Ok((counts, progress.finish()))
        });
    let unloaded = loaded.unload(file);
    let (counts, elapsed) = copied?;
    unloaded?;
    if !args.quiet {
        say!(
            "imported {} from {} into {}: {} chunks written, {} chunks of zeros skipped{}",
            rate(len, elapsed),
            image_path.display(),
            file.display(),
            counts.data,
            counts.skipped,
            match counts.cleared {
                0 => String::new(),
                n => format!(", {n} chunks cleared"),
            }
        );
    }
    Ok(())
}

pub fn export(args: &Copy) -> Result<(), Failure> {
    let (file, image_path) = (&args.file, &args.image);
    not_the_same(file, image_path)?;
    let loaded = volume::load(file)?;
    let vol_size = loaded.vol.params().vol_size;
    let copied = loaded
        .need_codec(file)
        .and_then(|()| open_image(image_path, vol_size))
        .and_then(|(out, sparse)| {
            let progress = Progress::new("export", vol_size, args.quiet);
            let counts = copy_out(&loaded.vol, &out, sparse, args, &progress)?;
            out.sync_all().map_err(|e| os_failure(image_path, &e))?;
            Ok((counts, progress.finish()))
        });
    let unloaded = loaded.unload(file);
    let (counts, elapsed) = copied?;
    unloaded?;
    if !args.quiet {
        say!(
            "exported {} from {} to {}: {} chunks of data, {} chunks of zeros skipped",
            rate(vol_size, elapsed),
            file.display(),
            image_path.display(),
            counts.data,
            counts.skipped
        );
    }
    Ok(())
}

/// An image larger than the volume is refused before anything is written.
fn fits(vol: &blocking::Volume, file: &Path, image: &Path, len: u64) -> Result<(), Failure> {
    let vol_size = vol.params().vol_size;
    if len <= vol_size {
        return Ok(());
    }
    Err(Failure::new(format!(
        "{}: the volume is too small for {}: the image is {} ({len} bytes), the volume {} ({vol_size} bytes): {}; nothing was written",
        file.display(),
        image.display(),
        human(len),
        human(vol_size),
        crate::fail::errno_text(Errno::ENOSPC)
    ))
    .hint("make a volume of the image's size plus 128 chunks: reduce create FILE --size SIZE ..."))
}

/// Copies `len` bytes of `image` into the volume from its start.
fn copy_in(
    vol: &blocking::Volume,
    image: &File,
    len: u64,
    args: &Copy,
    progress: &Progress,
) -> Result<Counts, Failure> {
    let p = vol.params();
    let (chunk, lbs) = (u64::from(p.chunk_size), u64::from(p.logical_block_size));
    let mut data = vec![0u8; p.chunk_size as usize];
    let mut held = vec![0u8; p.chunk_size as usize];
    let mut counts = Counts::default();
    // Chunk-aligned pieces, each within one chunk; the last one padded with zeros to
    // a whole logical block.
    for offset in (0..len).step_by(chunk as usize) {
        let n = chunk.min(len - offset) as usize;
        image.read_exact_at(&mut data[..n], offset).map_err(|e| {
            Failure::new(format!(
                "{}: reading {n} bytes at byte {offset}: {}",
                args.image.display(),
                io_reason(&e)
            ))
        })?;
        let padded = n.next_multiple_of(lbs as usize);
        data[n..padded].fill(0);
        let (piece, block) = (&data[..padded], offset / lbs);
        let failed = |doing: &str, e: reduce::Error| write_failure(args, doing, offset, e);
        if is_zero(piece) {
            // Skipped only where the volume holds zeros already, so the volume ends up
            // with the image's bytes whatever it held.
            let held = &mut held[..padded];
            vol.read(block, held).map_err(|e| failed("reading", e))?;
            if is_zero(held) {
                counts.skipped += 1;
            } else {
                vol.unmap(block, padded as u64 / lbs)
                    .map_err(|e| failed("clearing", e))?;
                counts.cleared += 1;
            }
        } else {
            vol.write(block, piece).map_err(|e| failed("writing", e))?;
            counts.data += 1;
        }
        progress.advance(n as u64);
    }
    Ok(counts)
}

fn write_failure(args: &Copy, doing: &str, offset: u64, e: reduce::Error) -> Failure {
    let full = e.errno() == Errno::ENOSPC;
    Failure::new(format!(
        "{}: {}{doing} the chunk at byte {offset} of {}: {}",
        args.file.display(),
        if full { "the volume is full: " } else { "" },
        args.image.display(),
        reason(&e)
    ))
}

/// Opens (making or truncating) the image to export to. A regular file is emptied and
/// sized, so that chunks of zeros can be skipped (left as holes); anything else (a
/// block device) gets every chunk written.
fn open_image(image: &Path, vol_size: u64) -> Result<(File, bool), Failure> {
    let out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(image)
        .map_err(|e| os_failure(image, &e))?;
    let sparse = out.metadata().map_err(|e| os_failure(image, &e))?.is_file();
    if sparse {
        out.set_len(0)
            .and_then(|()| out.set_len(vol_size))
            .map_err(|e| os_failure(image, &e))?;
    }
    Ok((out, sparse))
}

/// Copies the whole volume to `out`.
fn copy_out(
    vol: &blocking::Volume,
    out: &File,
    sparse: bool,
    args: &Copy,
    progress: &Progress,
) -> Result<Counts, Failure> {
    let p = vol.params();
    let (chunk, lbs) = (u64::from(p.chunk_size), u64::from(p.logical_block_size));
    let mut data = vec![0u8; p.chunk_size as usize];
    let mut counts = Counts::default();
    for offset in (0..p.vol_size).step_by(chunk as usize) {
        vol.read(offset / lbs, &mut data).map_err(|e| {
            Failure::new(format!(
                "{}: reading the chunk at byte {offset}: {}",
                args.file.display(),
                reason(&e)
            ))
        })?;
        if sparse && is_zero(&data) {
            counts.skipped += 1;
        } else {
            out.write_all_at(&data, offset).map_err(|e| {
                Failure::new(format!(
                    "{}: writing {chunk} bytes at byte {offset}: {}",
                    args.image.display(),
                    io_reason(&e)
                ))
            })?;
            counts.data += 1;
        }
        progress.advance(chunk);
    }
    Ok(counts)
}

fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

fn os_failure(path: &Path, e: &std::io::Error) -> Failure {
    Failure::new(format!("{}: {}", path.display(), io_reason(e)))
}

/// Refuses an image that is the backing file itself (exporting to it would truncate
/// the volume under itself).
fn not_the_same(file: &Path, image: &Path) -> Result<(), Failure> {
    let id = |path: &Path| std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    match (id(file), id(image)) {
        (Some(a), Some(b)) if a == b => Err(Failure::new(format!(
            "{} is the volume's own backing file {}",
            image.display(),
            file.display()
        ))),
        _ => Ok(()),
    }
}
