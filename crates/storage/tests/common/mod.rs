//! What the storage tests share: one Garage per test binary, and the S3
//! settings that reach it under a prefix.
#![allow(dead_code)]

use std::sync::OnceLock;

use berth_s3_fixture::Garage;
use berth_storage::s3::{S3Config, S3Storage, Secret};

pub fn garage() -> &'static Garage {
    static GARAGE: OnceLock<Garage> = OnceLock::new();
    GARAGE.get_or_init(Garage::start)
}

/// Settings for the test Garage under `prefix`, with 5 MiB parts (S3's
/// smallest, so that tests of several parts stay small).
pub fn s3_config(prefix: &str) -> S3Config {
    let g = garage();
    let mut cfg = S3Config::new(&g.bucket);
    cfg.endpoint = Some(g.endpoint());
    cfg.region = g.region.clone();
    cfg.path_style = true;
    cfg.prefix = prefix.to_string();
    cfg.access_key_id = Some(g.key_id.clone());
    cfg.secret_access_key = Some(Secret(g.secret.clone()));
    cfg.part_size = 5 * 1024 * 1024;
    cfg
}

pub async fn s3(prefix: &str) -> S3Storage {
    S3Storage::open(s3_config(prefix))
        .await
        .expect("open S3 storage")
}
