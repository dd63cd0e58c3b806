//! `reduce destroy`: clears a volume's signature and removes its pm file.

use crate::args::Destroy;
use crate::fail::Failure;
use crate::volume;

pub fn run(args: &Destroy) -> Result<(), Failure> {
    let file = &args.file;
    volume::destroy(file, args.force).map_err(|refusal| refusal.failure(file))?;
    say!(
        "{}: volume destroyed, its pm file removed (the file itself stays)",
        file.display()
    );
    Ok(())
}
