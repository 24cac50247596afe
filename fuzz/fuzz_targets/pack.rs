//! The pack decoders (footer, trailer, blobs) on arbitrary bytes.
#![no_main]

use cairn_repo::ids::PackId;
use cairn_repo::pack;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let id = PackId::of(data);
    if let Ok(entries) = pack::parse_pack("fuzz", &id, data) {
        for e in entries {
            let end = (e.offset + e.stored_len as u64) as usize;
            if let Some(stored) = data.get(e.offset as usize..end) {
                let _ = pack::open_blob("fuzz", &e, stored);
            }
        }
    }
    if data.len() >= pack::PACK_FOOTER_LEN {
        let n = data.len();
        if let Ok((at, _)) = pack::parse_footer("fuzz", &data[n - pack::PACK_FOOTER_LEN..], n as u64) {
            let _ = pack::parse_trailer("fuzz", &data[at as usize..], at);
        }
    }
});
