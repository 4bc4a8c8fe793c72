//! Key derivation: card-key diversification, transaction session keys and the TAC key.
//!
//! This module exists because the host security module and the simulated card must derive
//! exactly the same keys from master keys and from the values exchanged in INITIALIZE FOR
//! LOAD / PURCHASE. Reference section 2.1 (diversification) and 2.2 (session keys).

use crate::block::{invert, sm4_encrypt_block, tdes_encrypt_block};
use crate::keys::{Algorithm, Key16, SessionKey};

/// Key diversification of a master key by an 8-byte factor `F`.
///
/// * 3DES: `K = 3DES_ECB(MK, F) || 3DES_ECB(MK, !F)` (2-key EDE).
/// * SM4: `K = SM4_ECB(MK, F || !F)` (one 16-byte block).
pub fn diversify(alg: Algorithm, master: &Key16, factor: &[u8; 8]) -> Key16 {
    let inv = invert(factor);
    let mut out = [0u8; 16];
    match alg {
        Algorithm::Tdes => {
            let (l, r) = out.split_at_mut(8);
            l.copy_from_slice(&tdes_encrypt_block(master, factor));
            r.copy_from_slice(&tdes_encrypt_block(master, &inv));
        }
        Algorithm::Sm4 => {
            out = sm4_encrypt_block(master.expose(), &concat_inverse(factor));
        }
    }
    Key16(out)
}

/// Two-level diversification for ETC cards, issuer first, then card:
/// `Div(Div(root, issuer4 || issuer4), card8)`.
///
/// `issuer4` is `0015[0..4]` (the issuer code), `card8` the 8-byte internal card number.
pub fn diversify_two_level(
    alg: Algorithm,
    root: &Key16,
    issuer4: &[u8; 4],
    card8: &[u8; 8],
) -> Key16 {
    let mut issuer_factor = [0u8; 8];
    issuer_factor[..4].copy_from_slice(issuer4);
    issuer_factor[4..].copy_from_slice(issuer4);
    let issuer_key = diversify(alg, root, &issuer_factor);
    diversify(alg, &issuer_key, card8)
}

/// Load (圈存) session key.
///
/// `input8 = random(4) || online_atc(2, big-endian) || 80 00`.
/// * 3DES: `SessionKey::Des(3DES_ECB(DLK, input8))`.
/// * SM4 (**UNCONFIRMED**, by analogy with purchase): `SessionKey::Sm4(SM4_ECB(DLK, input8 || !input8))`.
pub fn load_session_key(
    alg: Algorithm,
    dlk: &Key16,
    random: [u8; 4],
    online_atc: u16,
) -> SessionKey {
    let atc = online_atc.to_be_bytes();
    let input = [
        random[0], random[1], random[2], random[3], atc[0], atc[1], 0x80, 0x00,
    ];
    session_key(alg, dlk, &input)
}

/// Purchase (and composite/CAPP purchase) session key.
///
/// `input8 = random(4) || offline_atc(2, big-endian) || term_txn_seq[2..4]` (the low two
/// bytes of the 4-byte big-endian terminal transaction sequence number).
/// * 3DES: `SessionKey::Des(3DES_ECB(DPK, input8))`.
/// * SM4: `SessionKey::Sm4(SM4_ECB(DPK, input8 || !input8))`.
pub fn purchase_session_key(
    alg: Algorithm,
    dpk: &Key16,
    random: [u8; 4],
    offline_atc: u16,
    term_txn_seq: u32,
) -> SessionKey {
    let atc = offline_atc.to_be_bytes();
    let seq = term_txn_seq.to_be_bytes();
    let input = [
        random[0], random[1], random[2], random[3], atc[0], atc[1], seq[2], seq[3],
    ];
    session_key(alg, dpk, &input)
}

/// TAC key.
///
/// * 3DES: `SessionKey::Des(DTK[0..8] XOR DTK[8..16])`, used as a single-DES key.
/// * SM4 (**UNCONFIRMED**, our documented choice): `SessionKey::Sm4(DTK)`, the DTK used
///   directly as the SM4 CBC-MAC key.
pub fn tac_key(alg: Algorithm, dtk: &Key16) -> SessionKey {
    match alg {
        Algorithm::Tdes => {
            let mut k = [0u8; 8];
            for ((o, l), r) in k.iter_mut().zip(dtk.left()).zip(dtk.right()) {
                *o = l ^ r;
            }
            SessionKey::Des(k)
        }
        Algorithm::Sm4 => SessionKey::Sm4(*dtk.expose()),
    }
}

/// Common session-key step once the 8-byte input is assembled.
fn session_key(alg: Algorithm, key: &Key16, input: &[u8; 8]) -> SessionKey {
    match alg {
        Algorithm::Tdes => SessionKey::Des(tdes_encrypt_block(key, input)),
        Algorithm::Sm4 => SessionKey::Sm4(sm4_encrypt_block(key.expose(), &concat_inverse(input))),
    }
}

/// `x || !x` as one 16-byte SM4 block.
fn concat_inverse(x: &[u8; 8]) -> [u8; 16] {
    let inv = invert(x);
    let mut block = [0u8; 16];
    block[..8].copy_from_slice(x);
    block[8..].copy_from_slice(&inv);
    block
}
