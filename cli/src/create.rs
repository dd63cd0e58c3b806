//! `reduce create`: a new volume on a backing file, made first when `--size` is given.

use std::path::Path;

use reduce::{Codec, Errno, FileDevice, Lz4Codec, Params, ZstdCodec, blocking};

use crate::args::{CodecName, Create};
use crate::fail::{Failure, errno_text, reason};
use crate::info::compression_name;
use crate::size::human;
use crate::volume::{self, CREATE_BLOCKLEN};

pub fn run(args: &Create) -> Result<(), Failure> {
    let codec = codec(args.codec, args.level)?;
    let params = Params {
        backing_io_unit_size: args.io_unit,
        logical_block_size: args.block_size,
        chunk_size: args.chunk_size,
        ..Params::default()
    };
    let file = &args.file;
    let device = match args.size {
        Some(size) => make_file(file, size)?,
        None => existing_file(file)?,
    };
    match blocking::Volume::init(params, device, codec, &args.pm_dir) {
        Ok(vol) => {
            let p = vol.params();
            say!(
                "{}: created a volume of {} ({} bytes), uuid {}, compression {}, pm file {}",
                file.display(),
                human(p.vol_size),
                p.vol_size,
                crate::info::uuid(&p),
                compression_name(p.compression),
                vol.pm_path().display()
            );
            vol.unload()
                .map_err(|e| Failure::new(format!("{}: unloading: {}", file.display(), reason(&e))))
        }
        Err(e) => {
            // A file made here goes again: a failed create leaves nothing behind.
            if args.size.is_some() {
                let _ = std::fs::remove_file(file);
            }
            Err(init_failure(file, &args.pm_dir, &e))
        }
    }
}

/// The codec to store chunks with.
fn codec(name: CodecName, level: Option<u32>) -> Result<Box<dyn Codec>, Failure> {
    match (name, level) {
        (CodecName::Zstd, level) => {
            let codec = ZstdCodec::new(level.unwrap_or(ZstdCodec.level()))
                .map_err(|e| Failure::new(format!("--level: {}", e.detail())))?;
            Ok(Box::new(codec))
        }
        (CodecName::Lz4, None | Some(1)) => Ok(Box::new(Lz4Codec)),
        (CodecName::Lz4, Some(level)) => Err(Failure::new(format!(
            "--level {level}: lz4 has one level, 1"
        ))),
    }
}

/// Makes `file`, `size` bytes (sparse).
fn make_file(file: &Path, size: u64) -> Result<FileDevice, Failure> {
    let block = u64::from(CREATE_BLOCKLEN);
    if size % block != 0 {
        return Err(Failure::new(format!(
            "--size {size}: not a whole number of {block}-byte blocks"
        )));
    }
    FileDevice::create(file, CREATE_BLOCKLEN, size / block).map_err(|e| {
        let failure = Failure::new(format!("{}: {}", file.display(), errno_text(e.errno())));
        if e.errno() == Errno::EEXIST {
            failure
                .hint("without --size, create uses the existing file (which must hold no volume)")
        } else {
            failure
        }
    })
}

/// Opens an existing `file`, refusing one that holds a volume: creating over it would
/// lose that volume.
fn existing_file(file: &Path) -> Result<FileDevice, Failure> {
    let held = volume::holds_volume(file).map_err(|failure| {
        if file.exists() {
            failure
        } else {
            failure.hint("with --size SIZE, create makes the file")
        }
    })?;
    if let Some(pm) = held {
        return Err(Failure::new(format!(
            "{} holds a volume already (pm file {})",
            file.display(),
            pm.display()
        ))
        .hint(format!(
            "`reduce destroy {}` first (with --force if its pm file is lost)",
            file.display()
        )));
    }
    FileDevice::open(file, CREATE_BLOCKLEN)
        .map_err(|e| Failure::new(format!("{}: {}", file.display(), errno_text(e.errno()))))
}

fn init_failure(file: &Path, pm_dir: &Path, e: &reduce::Error) -> Failure {
    let what = if e.errno() == Errno::EINVAL {
        "bad geometry"
    } else {
        "cannot create the volume"
    };
    let failure = Failure::new(format!("{}: {what}: {}", file.display(), reason(e)));
    if e.errno() == Errno::ENOENT {
        failure.hint(format!(
            "the pm directory must exist: mkdir -p {}",
            pm_dir.display()
        ))
    } else {
        failure
    }
}
