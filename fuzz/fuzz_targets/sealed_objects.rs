//! Every sealed object decoder (manifest, catalog, damage register, condemned packs, and the
//! raw envelope) on arbitrary bytes: errors are fine, panics and unbounded allocations are not.
#![no_main]

use cairn_repo::catalog::Catalog;
use cairn_repo::codec;
use cairn_repo::damage::DamageRegister;
use cairn_repo::gc::CondemnedList;
use cairn_repo::manifest::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = codec::open_raw("fuzz", codec::magic::MANIFEST, data);
    let _ = Manifest::decode("fuzz", data);
    let _ = Catalog::decode("fuzz", data);
    let _ = DamageRegister::decode("fuzz", data);
    let _ = CondemnedList::decode("fuzz", data);
    // Also the bodies without the envelope, so the fuzzer reaches the decoder directly.
    let _ = codec::decode_body::<Manifest>("fuzz", data);
    let _ = codec::decode_body::<Catalog>("fuzz", data);
    let _ = codec::decode_body::<CondemnedList>("fuzz", data);
});
