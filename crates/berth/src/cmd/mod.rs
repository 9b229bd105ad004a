//! One module per subcommand.

pub mod doctor;
pub mod runtime_config;
pub mod secret;
pub mod serve;
// Image tool (issue 5).
pub mod bundle;
pub mod cache;
pub mod copy;
pub mod images;
pub mod imaging;
pub mod inspect;
pub mod ls;
pub mod rm;
