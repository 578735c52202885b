fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/gpuctl.proto");
    tonic_prost_build::configure().compile_protos(&["proto/gpuctl.proto"], &["proto"])?;
    Ok(())
}
