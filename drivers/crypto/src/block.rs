//! Thin, infallible wrappers around the RustCrypto block ciphers.
//!
//! They exist so that the rest of the crate works with plain fixed-size byte arrays and
//! never handles `GenericArray` conversions (which can panic on a wrong length) itself:
//! every conversion here goes from a fixed-size array reference, so lengths are checked by
//! the type system. Also home of the ISO 9797-1 padding method 2 and the CBC-MAC core.

use cipher::{Block, BlockEncrypt, KeyInit};
use des::{Des, TdesEde2};
use sm4::Sm4;

use crate::keys::Key16;

/// Single-DES cipher from an 8-byte key.
pub(crate) fn des(key: &[u8; 8]) -> Des {
    Des::new(key.into())
}

/// 2-key 3DES (EDE, K1 || K2) cipher from a 16-byte key.
pub(crate) fn tdes(key: &Key16) -> TdesEde2 {
    TdesEde2::new(key.expose().into())
}

/// SM4 cipher from a 16-byte key.
pub(crate) fn sm4(key: &[u8; 16]) -> Sm4 {
    Sm4::new(key.into())
}

/// Encrypts one 8-byte block with 2-key 3DES.
pub(crate) fn tdes_encrypt_block(key: &Key16, block: &[u8; 8]) -> [u8; 8] {
    let mut out = *block;
    tdes(key).encrypt_block((&mut out).into());
    out
}

/// Encrypts one 16-byte block with SM4.
pub(crate) fn sm4_encrypt_block(key: &[u8; 16], block: &[u8; 16]) -> [u8; 16] {
    let mut out = *block;
    sm4(key).encrypt_block((&mut out).into());
    out
}

/// Bitwise NOT of every byte.
pub(crate) fn invert<const N: usize>(bytes: &[u8; N]) -> [u8; N] {
    let mut out = *bytes;
    for b in &mut out {
        *b = !*b;
    }
    out
}

/// ISO/IEC 9797-1 padding method 2: append `80`, then `00` up to a multiple of `block`.
/// Padding is always added, so aligned input grows by one full block.
pub(crate) fn pad_80(data: &[u8], block: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + block);
    out.extend_from_slice(data);
    out.push(0x80);
    while out.len() % block != 0 {
        out.push(0x00);
    }
    out
}

/// CBC-MAC core: starting from `state` (the IV), XOR each block of `padded` into the state
/// and encrypt it. `padded` must already be padded; a trailing partial block (impossible
/// with [`pad_80`]) is ignored rather than causing a panic. Returns the final state.
pub(crate) fn cbc_mac_raw<C: BlockEncrypt>(
    cipher: &C,
    mut state: Block<C>,
    padded: &[u8],
) -> Block<C> {
    let bs = state.len();
    for chunk in padded.chunks_exact(bs) {
        for (s, d) in state.iter_mut().zip(chunk) {
            *s ^= *d;
        }
        cipher.encrypt_block(&mut state);
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_always_added() {
        assert_eq!(pad_80(&[], 8), vec![0x80, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(pad_80(&[1; 7], 8).len(), 8);
        assert_eq!(pad_80(&[1; 8], 8).len(), 16);
        assert_eq!(pad_80(&[1; 16], 16).len(), 32);
        assert_eq!(pad_80(&[1; 15], 16), [&[1u8; 15][..], &[0x80]].concat());
    }

    #[test]
    fn sm4_gbt32907_self_test() {
        // GB/T 32907-2016 appendix A example 1.
        let k: [u8; 16] = hex::decode("0123456789ABCDEFFEDCBA9876543210")
            .unwrap()
            .try_into()
            .unwrap();
        let c = sm4_encrypt_block(&k, &k);
        assert_eq!(hex::encode_upper(c), "681EDF34D206965E86B3E94F536E4246");
    }
}
