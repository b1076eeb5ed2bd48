//! Compiles `proto/` with protox (no protoc needed) into prost types with pbjson serde impls, so
//! request JSON is read exactly as protojson reads it; and, separately, the psrpc envelope and
//! egress `rpc` messages (plain prost, `livekit.*` types from the livekit-protocol crate).
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

    compile_psrpc(&out)?;
    embed_templates(&out)?;
    Ok(())
}

/// The psrpc envelope (`package internal`) and the egress worker's `package rpc` messages, into
/// `OUT_DIR/psrpc/`. A run of its own: these are plain prost types (no serde), and their
/// `livekit.*` fields are the livekit-protocol crate's types, not our legacy `package livekit`.
/// `livekit_egress_stub.proto` only names those types for protox; nothing is generated from it.
fn compile_psrpc(out: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/psrpc_internal.proto",
        "proto/rpc_egress.proto",
        "proto/livekit_egress_stub.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let dir = out.join("psrpc");
    std::fs::create_dir_all(&dir)?;
    let descriptor_path = dir.join("psrpc_descriptor.bin");
    let fds = protox::compile(&protos[..2], ["proto"])?;
    std::fs::write(&descriptor_path, prost::Message::encode_to_vec(&fds))?;

    prost_build::Config::new()
        .out_dir(&dir)
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .compile_well_known_types()
        .extern_path(".google.protobuf", "::pbjson_types")
        .extern_path(".livekit", "::livekit_protocol")
        .compile_protos(&protos[..2], &["proto"])?;
    Ok(())
}

/// Embeds the built layout templates (`web/dist`, made by `make web`) into the binary. Without
/// them the binary still builds, and template requests without a template address fail with a
/// message saying so.
fn embed_templates(out: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let dist = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("web/dist");
    println!("cargo:rerun-if-changed={}", dist.display());
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dist) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    if !files.iter().any(|f| f.ends_with("index.html")) {
        println!("cargo:warning=web/dist is not built: the binary has no built-in templates (run `make web`)");
        files.clear();
    }
    let mut code = String::from("/// The built templates: (file name, contents).\npub static FILES: &[(&str, &[u8])] = &[\n");
    for f in &files {
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or("non-UTF-8 file name in web/dist")?;
        code.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            f.display().to_string()
        ));
    }
    code.push_str("];\n");
    std::fs::write(out.join("templates.rs"), code)?;
    Ok(())
}
