//! Compiles the wire contract. protoc comes from the protoc-bin-vendored crate, so the build
//! needs nothing but cargo.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let files = ["config.proto", "sync.proto", "admin.proto"].map(|f| root.join("llmgw/v1").join(f));
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // Sorted maps encode deterministically, so "did this resource change" is a byte comparison.
    config.btree_map(["."]);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("llmgw_descriptor.bin"))
        .compile_with_config(config, &files, &[root])?;
    Ok(())
}
