//! ECB encryption/decryption of whole blocks.
//!
//! This module exists for the two places where the protocol uses raw ECB on more than one
//! block: 32-byte key records sent in `84 D4` (key load), and encrypted reads of OBU ESAM
//! files. Everything else uses the dedicated functions in `derive` and `mac`.

use cipher::{Block, BlockDecrypt, BlockEncrypt};

use zeroize::Zeroize;

use crate::block::{sm4, tdes};
use crate::error::CryptoError;
use crate::keys::{Algorithm, Key16};

/// Encrypts `data` in ECB mode with 2-key 3DES (8-byte blocks) or SM4 (16-byte blocks).
///
/// No padding is applied: the length must be a multiple of the block size (0 is allowed),
/// otherwise [`CryptoError::BadLength`] is returned.
pub fn ecb_encrypt(alg: Algorithm, key: &Key16, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
    ecb(alg, key, data, Direction::Encrypt)
}

/// Decrypts `data` in ECB mode; same length rule as [`ecb_encrypt`].
pub fn ecb_decrypt(alg: Algorithm, key: &Key16, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
    ecb(alg, key, data, Direction::Decrypt)
}

#[derive(Clone, Copy)]
enum Direction {
    Encrypt,
    Decrypt,
}

fn ecb(alg: Algorithm, key: &Key16, data: &[u8], dir: Direction) -> Result<Vec<u8>, CryptoError> {
    if data.len() % alg.block_size() != 0 {
        return Err(CryptoError::BadLength {
            expected: match alg {
                Algorithm::Tdes => "a multiple of 8 bytes (3DES block size); pad the data first",
                Algorithm::Sm4 => "a multiple of 16 bytes (SM4 block size); pad the data first",
            },
            got: data.len(),
        });
    }
    Ok(match alg {
        Algorithm::Tdes => run(&tdes(key), data, dir),
        Algorithm::Sm4 => run(&sm4(key.expose()), data, dir),
    })
}

fn run<C: BlockEncrypt + BlockDecrypt>(cipher: &C, data: &[u8], dir: Direction) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut block = Block::<C>::default();
    for chunk in data.chunks_exact(block.len()) {
        block.copy_from_slice(chunk);
        match dir {
            Direction::Encrypt => cipher.encrypt_block(&mut block),
            Direction::Decrypt => cipher.decrypt_block(&mut block),
        }
        out.extend_from_slice(&block);
    }
    // The last block may hold plaintext key material (key records); wipe it.
    block.as_mut_slice().zeroize();
    out
}
