//! Placeholder until this verb lands.

#[derive(clap::Args)]
pub struct DoctorArgs {}

pub fn run(_args: DoctorArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
