//! Image extraction from Kubernetes YAML (berth-k8s-images), which reads
//! whatever manifests, Helm output or `kubectl get -o yaml` a user hands
//! `berth images`: never panics or hangs, and every image it reports is a
//! non-empty, trimmed string.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(found) = berth_k8s_images::find_images(text) else {
        return;
    };
    for f in found {
        assert!(!f.image.is_empty());
        assert_eq!(f.image.trim(), f.image);
        assert!(!f.kind.is_empty());
        if let Ok(n) = berth_k8s_images::normalise(&f.image) {
            assert_eq!(berth_k8s_images::normalise(&n).as_ref(), Ok(&n));
        }
    }
});
