//! `pgops keygen FILE`: a new encryption key file.

use pgops_core::pipeline::KeyRing;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct KeygenArgs {
    /// Where to write the key file; it must not exist yet
    file: PathBuf,
}

pub fn run(args: &KeygenArgs) -> ExitCode {
    match KeyRing::create_file(&args.file) {
        Ok((id, public_key)) => {
            // The public key and id only: the secret key stays in the file.
            println!("wrote {} (key id {id}, public key {public_key})", args.file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pgops keygen: {e}\nhint: {}", e.hint());
            ExitCode::from(crate::exit::OTHER)
        }
    }
}
