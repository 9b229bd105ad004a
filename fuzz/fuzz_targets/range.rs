//! `Range` (blob reads, berth-api), upload `Content-Range` (berth-api) and
//! upstream `Content-Range` (berth-upstream) parsing: never panics, and a
//! range it serves lies inside the blob. The input's first 8 bytes are the
//! blob size, the rest the header text.
#![no_main]

use berth_api::range::{parse_content_range, parse_range, RangeRequest};
use berth_upstream::ContentRange;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (size, text) = match data.split_first_chunk::<8>() {
        Some((n, rest)) => (u64::from_le_bytes(*n), rest),
        None => (0, data),
    };
    let Ok(header) = std::str::from_utf8(text) else {
        return;
    };
    // Small sizes are where off-by-ones live; large ones where overflows do.
    for size in [size, size % 64, u64::MAX] {
        if let RangeRequest::Partial(r) = parse_range(Some(header), size) {
            assert!(r.start < r.end, "{header:?} size {size}: {r:?}");
            assert!(r.end <= size, "{header:?} size {size}: {r:?}");
        }
    }
    if let Some((start, end)) = parse_content_range(header) {
        assert!(start <= end);
    }
    if let Some(cr) = ContentRange::parse(header) {
        assert!(cr.start <= cr.end);
    }
});
