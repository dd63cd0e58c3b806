//! Generates `include/reduce.h` from the C ABI in `src/ffi`, and gives the shared
//! library its soname and a version script that exports only `spdk_reduce_*` and
//! `reduce_*`.

use std::path::Path;

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dir = Path::new(&dir);
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=reduce.map");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libreduce.so.0");
    println!(
        "cargo:rustc-cdylib-link-arg=-Wl,--version-script={}",
        dir.join("reduce.map").display()
    );

    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    match cbindgen::generate_with_config(dir, config) {
        // Writes only when the text changed, so a current header keeps its mtime.
        Ok(bindings) => {
            bindings.write_to_file(dir.join("include/reduce.h"));
        }
        Err(e) => println!("cargo:warning=cbindgen could not generate include/reduce.h: {e}"),
    }
}
