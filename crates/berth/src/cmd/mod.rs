//! One module per subcommand.

pub mod admin;
pub mod ca;
pub mod doctor;
pub mod gc;
pub mod runtime_config;
pub mod scrub;
pub mod secret;
pub mod serve;
pub mod token;
// Image tool (issue 5).
pub mod bundle;
pub mod cache;
pub mod copy;
pub mod images;
pub mod imaging;
pub mod inspect;
pub mod ls;
pub mod rm;
pub mod sync;

/// A failure the verb has already reported in its own output (the doctor's
/// report, for one): the caller only sets the exit status, and prints no
/// second, machine-readable error after it.
#[derive(Debug)]
pub struct AlreadyReported(pub &'static str);

impl std::fmt::Display for AlreadyReported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for AlreadyReported {}
