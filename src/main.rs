//! The jetstream-kv-operator binary.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match jetstream_kv_operator::cli::main().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
