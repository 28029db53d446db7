//! The stand-in engine's token rule: a deterministic, hash-based "model" for the places
//! where real weights are not the point (the simulator's providers, the node's
//! `HashEngine` in tests without weights). One rule, so both produce the same tokens.

use crate::Hash32;

/// Generated token ids are below this.
pub const VOCAB: u32 = 49_152;

/// The tokens generated for `input` by the stand-in "model" `weights` with `seed`: length
/// and tokens are hashes of the three; the answer has 2 to `max_tokens - 1` tokens when
/// `max_tokens >= 4` (so it stops on its own), else 2 (the caller cuts to `max_tokens`).
pub fn tokens(weights: &Hash32, input: &Hash32, seed: u64, max_tokens: u32) -> Vec<u32> {
    let h = |what: &[u8], i: u32| {
        Hash32::digest(
            "vouch sim token",
            &[
                weights.as_bytes(),
                input.as_bytes(),
                &seed.to_le_bytes(),
                what,
                &i.to_le_bytes(),
            ],
        )
    };
    let word = |d: Hash32| u32::from_le_bytes(d.as_bytes()[..4].try_into().expect("4 bytes"));
    let len = 2 + word(h(b"len", 0)) % max_tokens.saturating_sub(2).max(1);
    (0..len).map(|i| word(h(b"tok", i)) % VOCAB).collect()
}
