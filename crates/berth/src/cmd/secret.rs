//! Placeholder until this verb lands.

#[derive(clap::Args)]
pub struct SecretArgs {}

pub fn run(_args: SecretArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
