//! MAC algorithms: the purse MAC (MAC1 / MAC2 / TAC), the secure-messaging MAC and
//! constant-time MAC comparison.
//!
//! This module exists because the card computes and the host verifies (or vice versa) the
//! same MACs; both must use this one implementation. Reference section 2.3.

use cipher::{Block, BlockDecrypt, BlockEncrypt};
use des::Des;
use sm4::Sm4;

use crate::block::{cbc_mac_raw, des, pad_80, sm4};
use crate::keys::{Algorithm, Key16, SessionKey};

/// Purse MAC used for MAC1, MAC2 and TAC.
///
/// * `SessionKey::Des`: single-DES CBC-MAC (ISO/IEC 9797-1 algorithm 1), IV = 0, data
///   always padded with `80 00..` to a multiple of 8 (a full block is added when already
///   aligned); the MAC is the first 4 bytes of the last block.
/// * `SessionKey::Sm4`: SM4 CBC-MAC with 16-byte blocks, IV = 0, `80`-padding to 16 always,
///   first 4 bytes.
///
/// Accepts any data length, including empty.
pub fn purse_mac(key: &SessionKey, data: &[u8]) -> [u8; 4] {
    match key {
        SessionKey::Des(k) => {
            let out = cbc_mac_raw(&des(k), Block::<Des>::default(), &pad_80(data, 8));
            first4(&out)
        }
        SessionKey::Sm4(k) => {
            let out = cbc_mac_raw(&sm4(k), Block::<Sm4>::default(), &pad_80(data, 16));
            first4(&out)
        }
    }
}

/// Secure-messaging MAC for `04 D6` (UPDATE BINARY), `84 D4` (key load) and `84 18`
/// (application unblock) commands.
///
/// `data` is the full APDU header and data as sent (typically `CLA INS P1 P2 Lc data`,
/// where Lc already counts the 4 MAC bytes); the caller decides the exact bytes. The IV is
/// `challenge(4) || 00 00 00 00`, the challenge being the card's GET CHALLENGE response.
///
/// * 3DES: ISO/IEC 9797-1 algorithm 3 (the "retail MAC"): DES-CBC over all blocks with the
///   left key half, then the final block is decrypted with the right half and encrypted
///   with the left half. `80`-padding to 8 always.
/// * SM4: SM4-CBC with the 8-byte IV zero-extended to 16 bytes, `80`-padding to 16 always.
///
/// The MAC is the first 4 bytes.
pub fn secure_messaging_mac(
    alg: Algorithm,
    key: &Key16,
    challenge: [u8; 4],
    data: &[u8],
) -> [u8; 4] {
    match alg {
        Algorithm::Tdes => {
            let mut iv = Block::<Des>::default();
            iv[..4].copy_from_slice(&challenge);
            let left = des(key.left());
            let mut h = cbc_mac_raw(&left, iv, &pad_80(data, 8));
            des(key.right()).decrypt_block(&mut h);
            left.encrypt_block(&mut h);
            first4(&h)
        }
        Algorithm::Sm4 => {
            let mut iv = Block::<Sm4>::default();
            iv[..4].copy_from_slice(&challenge);
            let out = cbc_mac_raw(&sm4(key.expose()), iv, &pad_80(data, 16));
            first4(&out)
        }
    }
}

/// First four bytes of a cipher block (blocks are 8 or 16 bytes).
fn first4(block: &[u8]) -> [u8; 4] {
    let mut out = [0u8; 4];
    for (o, b) in out.iter_mut().zip(block) {
        *o = *b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purse_mac_padding_distinguishes_trailing_zero() {
        let k = SessionKey::Des([0x13; 8]);
        assert_ne!(purse_mac(&k, &[0x01]), purse_mac(&k, &[0x01, 0x00]));
        let k = SessionKey::Sm4([0x13; 16]);
        assert_ne!(purse_mac(&k, &[0x01]), purse_mac(&k, &[0x01, 0x00]));
    }
}
