//! Writes the hostile corpus of issue 9 (items 3–5) to a folder, one zip per case, with
//! the public key that signs the genuine parts (`public.key`) and a `cases.tsv` index
//! (name, item, defect, text the refusal must name). `bench/hostile.sh` runs
//! `casefile package verify` on each.
//!
//! cargo run -p casefile-package --example hostile_corpus -- DIR

use casefile_package::corpus;
use casefile_package::writer::PackageMeta;
use ed25519_dalek::SigningKey;

fn main() -> std::io::Result<()> {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "hostile-corpus".to_owned()));
    std::fs::create_dir_all(&dir)?;
    let key = SigningKey::from_bytes(&[9; 32]);
    std::fs::write(dir.join("public.key"), casefile_package::signature::public_key_base64(&key.verifying_key()))?;
    let mut index = String::new();
    let meta = PackageMeta::detached("hostile-corpus");
    std::fs::write(dir.join("genuine.zip"), corpus::genuine(&key, meta.clone()))?;
    for case in corpus::cases(&key, &meta) {
        std::fs::write(dir.join(format!("{}.zip", case.name)), &case.bytes)?;
        index.push_str(&format!("{}\t{}\t{}\t{}\n", case.name, case.item, case.defect, case.names));
    }
    std::fs::write(dir.join("cases.tsv"), index)?;
    println!("{}", dir.display());
    Ok(())
}
