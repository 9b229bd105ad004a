//! Property tests: a `Range` header as clients write it (`bytes=a-b`,
//! `bytes=a-`, `bytes=-n`, with or without spaces) parses to exactly the
//! bytes a model of RFC 9110 says, for any blob size; an upload chunk's
//! `Content-Range` (`a-b`, `bytes a-b/total`) parses back to what was sent.

use berth_api::range::{parse_content_range, parse_range, RangeRequest};
use berth_storage::ByteRange;
use proptest::prelude::*;

/// Sizes and offsets around the interesting edges (0, 1, the size, u64::MAX).
fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..4,
        0u64..10_000,
        Just(u64::MAX - 1),
        Just(u64::MAX),
        any::<u64>()
    ]
}

fn spaced(s: String, pad: bool) -> String {
    if pad {
        format!("  {s} ")
    } else {
        s
    }
}

proptest! {
    // Failures are reported, not written into the source tree.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn closed_ranges(size in offset(), start in offset(), end in offset(), pad in any::<bool>()) {
        let got = parse_range(Some(&spaced(format!("bytes={start}-{end}"), pad)), size);
        let want = if start > end || size == 0 || start >= size {
            RangeRequest::Unsatisfiable
        } else {
            RangeRequest::Partial(ByteRange { start, end: end.min(size - 1) + 1 })
        };
        prop_assert_eq!(got, want);
    }

    #[test]
    fn open_ranges(size in offset(), start in offset()) {
        let got = parse_range(Some(&format!("bytes={start}-")), size);
        let want = if start >= size {
            RangeRequest::Unsatisfiable
        } else {
            RangeRequest::Partial(ByteRange { start, end: size })
        };
        prop_assert_eq!(got, want);
    }

    #[test]
    fn suffix_ranges(size in offset(), n in offset()) {
        let got = parse_range(Some(&format!("bytes=-{n}")), size);
        let want = if n == 0 || size == 0 {
            RangeRequest::Unsatisfiable
        } else {
            RangeRequest::Partial(ByteRange { start: size - n.min(size), end: size })
        };
        prop_assert_eq!(got, want);
    }

    #[test]
    fn served_ranges_lie_inside_the_blob(size in offset(), header in "bytes=[0-9 ]{0,6}-[0-9 ]{0,6}") {
        if let RangeRequest::Partial(r) = parse_range(Some(&header), size) {
            prop_assert!(r.start < r.end && r.end <= size, "{:?} for {:?}, size {}", r, header, size);
        }
    }

    #[test]
    fn upload_content_ranges(start in offset(), end in offset(), total in proptest::option::of(offset()), prefix in any::<bool>()) {
        let mut h = format!("{start}-{end}");
        if prefix {
            h = format!("bytes {h}");
        }
        if let Some(t) = total {
            h = format!("{h}/{t}");
        }
        let want = (start <= end).then_some((start, end));
        prop_assert_eq!(parse_content_range(&h), want);
    }
}
