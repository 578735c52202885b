fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/gpuctl.proto");
    println!("cargo:rerun-if-changed=proto/grpc_predict_v2.proto");
    tonic_prost_build::configure().compile_protos(
        &["proto/gpuctl.proto", "proto/grpc_predict_v2.proto"],
        &["proto"],
    )?;
    Ok(())
}
