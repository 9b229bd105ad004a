//! One module per subcommand.

pub mod doctor;
pub mod runtime_config;
pub mod secret;
pub mod serve;
