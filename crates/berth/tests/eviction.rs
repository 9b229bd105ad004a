//! The size-capped cache (issue 15): a berth capped at 16 MiB pulls through
//! a rotating set of ten images of 8 MiB each (five times the cap) from an
//! upstream berth. Disk use stays under the cap plus the image in flight;
//! the newest image, a layer every image shares, and a pinned (pushed)
//! image still pull with the upstream stopped; the oldest images are gone.

mod common;

use std::time::{Duration, Instant};

use common::*;

const MIB: u64 = 1 << 20;
const CAP: u64 = 16 * MIB;
const IMAGE: u64 = 8 * MIB;

#[test]
fn a_capped_cache_evicts_the_least_recently_pulled_and_keeps_serving() {
    let upstream = Server::start();
    let shared = pseudo_random(MIB as usize, 1);
    let images = push_images_sharing_a_layer(&upstream, "app/web", 10, IMAGE, &shared, 100);

    let server = Server::start_with(&[
        format!("--upstream=registry.up.test={}", upstream.url()),
        format!("--cache-max-size={CAP}"),
        "--cache-min-age=1s".into(),
        // The device's own fill (other data on the test machine) must not
        // evict: this test is about the cap.
        "--cache-high-watermark=off".into(),
    ]);
    // Preloaded into the mirror namespace: pushed, so pinned.
    let pinned = push_image(
        &server,
        "registry.up.test/app/pinned",
        "v1",
        vec![pseudo_random(2 * MIB as usize, 7)],
    );
    let pinned_bytes = blob_bytes(&server.root);

    let mut peak = 0;
    for image in &images {
        assert!(
            pull_whole(&server, "registry.up.test/app/web", image),
            "pull {}",
            image.tag
        );
        let after_pull = blob_bytes(&server.root);
        peak = peak.max(after_pull);
        assert!(
            after_pull <= CAP + IMAGE + pinned_bytes,
            "{} bytes stored after pulling {}: over the cap plus one image",
            after_pull,
            image.tag
        );
        // The evictor brings it back under the cap within a few checks.
        let deadline = Instant::now() + Duration::from_secs(15);
        while blob_bytes(&server.root) > CAP && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(
            blob_bytes(&server.root) <= CAP,
            "still {} bytes stored 15 s after pulling {}",
            blob_bytes(&server.root),
            image.tag
        );
        // Older than the minimum age before the next pull.
        std::thread::sleep(Duration::from_millis(1100));
    }
    assert!(server.metric("berth_cache_evictions_total") >= 6.0);
    assert!(server.metric("berth_cache_evicted_bytes_total") >= (6 * (IMAGE - MIB)) as f64);
    assert!(peak > CAP, "the cap was never reached: nothing was tested");

    // With the upstream gone: the newest image, the pinned one and the
    // shared layer are all still there; the oldest is not.
    drop(upstream);
    let newest = images.last().unwrap();
    assert!(
        pull_whole(&server, "registry.up.test/app/web", newest),
        "the newest image pulls"
    );
    assert!(
        pull_whole(&server, "registry.up.test/app/pinned", &pinned),
        "the pinned image pulls"
    );
    assert!(
        !pull_whole(&server, "registry.up.test/app/web", &images[0]),
        "the oldest image was evicted"
    );
    assert!(
        server.holds_blob(&sha256(&shared)),
        "the shared layer stays"
    );
}

/// The device watermark on a real small file system: berth's root on a
/// 64 MiB tmpfs, pulled through by twenty 3 MiB images. Past 90% used, the
/// least recently pulled images go until it is under 80%; the newest image
/// still pulls with the upstream stopped, and no pull ever fails. (Images
/// are small beside the device so that the watermark, not the 1% reserve
/// that makes a fill stream uncached, is what acts.)
#[test]
fn the_device_watermark_evicts_from_90_down_to_80_percent() {
    let fs = Tmpfs::mount(64);
    let root = fs.path.join("root");
    let upstream = Server::start();
    let images: Vec<Image> = (0..20u64)
        .map(|i| {
            let own = pseudo_random((3 * MIB) as usize, 300 + i);
            push_image(&upstream, "app/big", &format!("v{i}"), vec![own])
        })
        .collect();
    let server = Server::start_on_with(
        &root,
        &[
            format!("--upstream=registry.up.test={}", upstream.url()),
            "--cache-min-age=1s".into(),
        ],
    );
    let mut evicted_once = false;
    for image in &images {
        assert!(
            pull_whole(&server, "registry.up.test/app/big", image),
            "pull {}",
            image.tag
        );
        let (used, total) = df_used_total(&fs.path);
        assert!(
            used <= total / 100 * 90 + IMAGE,
            "{used} of {total} bytes used after pulling {}: over the watermark plus one image",
            image.tag
        );
        if used > total / 100 * 90 {
            let deadline = Instant::now() + Duration::from_secs(15);
            while df_used_total(&fs.path).0 > total / 100 * 80 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
            }
            let (used, _) = df_used_total(&fs.path);
            assert!(
                used <= total / 100 * 80,
                "still {used} of {total} bytes used"
            );
            evicted_once = true;
        }
        std::thread::sleep(Duration::from_millis(1100));
    }
    assert!(
        evicted_once,
        "the watermark was never passed: nothing was tested"
    );
    assert!(server.metric("berth_cache_evictions_total") >= 1.0);
    drop(upstream);
    assert!(
        pull_whole(&server, "registry.up.test/app/big", images.last().unwrap()),
        "the newest image pulls from the cache"
    );
}
