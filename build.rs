fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/peer.proto");
    tonic_prost_build::configure()
        // Blob chunks travel as `bytes::Bytes`: no copy between the file
        // reader, the codec and the writer.
        .bytes(".berth.peer.v1.BlobChunk.data")
        .build_client(true)
        .build_server(true)
        .compile_protos(&["proto/peer.proto"], &["proto"])?;
    Ok(())
}
