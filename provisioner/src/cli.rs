//! (in progress)
pub fn main() -> anyhow::Result<()> {
    Ok(())
}
