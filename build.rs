//! Compiles `proto/` with protox (pure Rust), so a fresh machine needs only cargo.
//!
//! The Batch Server revision that added `IngestDataStream` renamed the package
//! `embedding` to `com.alpha.backend.grpc` and kept every message. We keep one
//! source of truth and derive the renamed file here, so that server reflection
//! can describe both names; the server answers the second name by rewriting
//! the request path (see `src/serve/package_alias.rs`).

use std::{env, fs, path::PathBuf};

const PROTO: &str = "proto/embedding_stream.proto";
const ALIAS_PACKAGE: &str = "com.alpha.backend.grpc";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO}");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    let source = fs::read_to_string(PROTO)?;
    let alias_dir = out_dir.join("alias");
    fs::create_dir_all(&alias_dir)?;
    let alias_source = source
        .replace("package embedding;", &format!("package {ALIAS_PACKAGE};"))
        .replace(
            "java_package = \"com.alpha.backend.grpc.proto\"",
            "java_package = \"com.alpha.backend.grpc\"",
        );
    if alias_source == source {
        return Err("build.rs: could not derive the aliased package from the proto".into());
    }
    let alias_path = alias_dir.join("embedding_stream_alias.proto");
    fs::write(&alias_path, alias_source)?;

    // Code for the canonical package only; the alias shares its messages on the wire.
    let fds = protox::compile([PROTO], ["proto"])?;
    fs::write(
        out_dir.join("embedding_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure().compile_fds(fds)?;

    // A descriptor of the alias for reflection only.
    let alias_fds = protox::compile([&alias_path], [&alias_dir])?;
    fs::write(
        out_dir.join("embedding_alias_descriptor.bin"),
        prost::Message::encode_to_vec(&alias_fds),
    )?;
    Ok(())
}
