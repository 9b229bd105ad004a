//! Placeholder until this verb lands.

#[derive(clap::Args)]
pub struct RuntimeConfigArgs {}

pub fn run(_args: RuntimeConfigArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
