//! Compiles `proto/` with protox (no protoc needed) into prost types with pbjson serde impls, so
//! request JSON is read exactly as protojson reads it.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/livekit_recording.proto",
        "proto/livekit_internal.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out.join("livekit_descriptor.bin");

    let fds = protox::compile(protos, ["proto"])?;
    let bytes = prost::Message::encode_to_vec(&fds);
    std::fs::write(&descriptor_path, &bytes)?;

    prost_build::Config::new()
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .compile_well_known_types()
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_protos(&protos, &["proto"])?;

    pbjson_build::Builder::new()
        .register_descriptors(&bytes)?
        .build(&[".livekit"])?;
    Ok(())
}
