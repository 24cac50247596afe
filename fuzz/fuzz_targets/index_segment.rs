//! The index segment decoder on arbitrary bytes.
#![no_main]

use cairn_repo::index::Segment;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Segment::decode("fuzz", data);
    // The same bytes inside a valid envelope, so the body parser is reached.
    let sealed = cairn_repo::codec::seal_raw(cairn_repo::codec::magic::INDEX, data, false);
    let _ = Segment::decode("fuzz", &sealed);
});
