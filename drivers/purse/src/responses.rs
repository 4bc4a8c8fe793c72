//! Typed responses of the purse commands (`docs/card-protocol.md`, "Commands").
//!
//! A purse transaction is only as trustworthy as the parsing of what the card said: these
//! types check exact lengths, so a short or padded answer is a [`ParseError`] instead of a
//! balance or MAC read from the wrong bytes. `to_bytes` gives the card's encoding back, for
//! journals, simulators and tests.

use cardd_crypto::Algorithm;
use serde::{Deserialize, Serialize};

use crate::codes::algorithm_for_alg_id;
use crate::error::ParseError;
use crate::files::{u24_bytes, Fields};

/// GET BALANCE: the 4-byte balance in fen.
pub fn parse_balance(bytes: &[u8]) -> Result<u32, ParseError> {
    Fields::new("GET BALANCE response", bytes, &[4], "4")?.u32()
}

/// A 4-byte value (TAC of CREDIT FOR LOAD, chip id of GET CHIP ID, a 4-byte challenge).
pub fn parse_four(what: &'static str, bytes: &[u8]) -> Result<[u8; 4], ParseError> {
    Fields::new(what, bytes, &[4], "4")?.take()
}

/// An 8-byte value (an 8-byte challenge).
pub fn parse_eight(what: &'static str, bytes: &[u8]) -> Result<[u8; 8], ParseError> {
    Fields::new(what, bytes, &[8], "8")?.take()
}

/// INITIALIZE FOR LOAD response (16 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitLoadResponse {
    /// Balance before the load, fen.
    pub old_balance: u32,
    /// Online transaction counter before the load.
    pub online_atc: u16,
    pub key_version: u8,
    /// `00` 3DES, `04` SM4.
    pub alg_id: u8,
    /// The card's random for the load session key.
    pub random: [u8; 4],
    /// The card's MAC1 (verify with the security module before computing MAC2).
    pub mac1: [u8; 4],
}

impl InitLoadResponse {
    pub const LEN: usize = 16;

    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut f = Fields::new("INITIALIZE FOR LOAD response", bytes, &[Self::LEN], "16")?;
        Ok(InitLoadResponse {
            old_balance: f.u32()?,
            online_atc: f.u16()?,
            key_version: f.u8()?,
            alg_id: f.u8()?,
            random: f.take()?,
            mac1: f.take()?,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        out.extend_from_slice(&self.old_balance.to_be_bytes());
        out.extend_from_slice(&self.online_atc.to_be_bytes());
        out.push(self.key_version);
        out.push(self.alg_id);
        out.extend_from_slice(&self.random);
        out.extend_from_slice(&self.mac1);
        out
    }

    /// The algorithm the card says it uses, if the identifier is known.
    pub fn algorithm(&self) -> Option<Algorithm> {
        algorithm_for_alg_id(self.alg_id)
    }
}

/// INITIALIZE FOR PURCHASE / CAPP PURCHASE response (15 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitPurchaseResponse {
    /// Balance before the purchase, fen.
    pub balance: u32,
    /// Offline transaction counter before the purchase.
    pub offline_atc: u16,
    /// Overdraft limit (3 bytes).
    pub overdraft_limit: u32,
    pub key_version: u8,
    /// `00` 3DES, `04` SM4.
    pub alg_id: u8,
    /// The card's random for the purchase session key.
    pub random: [u8; 4],
}

impl InitPurchaseResponse {
    pub const LEN: usize = 15;

    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut f = Fields::new(
            "INITIALIZE FOR PURCHASE response",
            bytes,
            &[Self::LEN],
            "15",
        )?;
        Ok(InitPurchaseResponse {
            balance: f.u32()?,
            offline_atc: f.u16()?,
            overdraft_limit: f.u24()?,
            key_version: f.u8()?,
            alg_id: f.u8()?,
            random: f.take()?,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        out.extend_from_slice(&self.balance.to_be_bytes());
        out.extend_from_slice(&self.offline_atc.to_be_bytes());
        out.extend_from_slice(&u24_bytes(self.overdraft_limit));
        out.push(self.key_version);
        out.push(self.alg_id);
        out.extend_from_slice(&self.random);
        out
    }

    pub fn algorithm(&self) -> Option<Algorithm> {
        algorithm_for_alg_id(self.alg_id)
    }
}

/// DEBIT FOR PURCHASE response: `TAC(4) MAC2(4)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebitResponse {
    pub tac: [u8; 4],
    /// The card's MAC2 (verify with the security module).
    pub mac2: [u8; 4],
}

impl DebitResponse {
    pub const LEN: usize = 8;

    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut f = Fields::new("DEBIT FOR PURCHASE response", bytes, &[Self::LEN], "8")?;
        Ok(DebitResponse {
            tac: f.take()?,
            mac2: f.take()?,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        [self.tac, self.mac2].concat()
    }
}

/// GET TRANSACTION PROVE response: `MAC(4) TAC(4)`. For a load the MAC is the MAC2 the card
/// accepted; for a purchase the card's MAC2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    pub mac: [u8; 4],
    pub tac: [u8; 4],
}

impl Proof {
    pub const LEN: usize = 8;

    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let mut f = Fields::new("GET TRANSACTION PROVE response", bytes, &[Self::LEN], "8")?;
        Ok(Proof {
            mac: f.take()?,
            tac: f.take()?,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        [self.mac, self.tac].concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    #[test]
    fn init_load_matches_the_reference_vector() {
        let bytes = h("000003E8 0005 01 00 A1B2C3D4 55954E2A");
        let r = InitLoadResponse::parse(&bytes).unwrap();
        assert_eq!(r.old_balance, 1000);
        assert_eq!(r.online_atc, 5);
        assert_eq!(r.key_version, 1);
        assert_eq!(r.algorithm(), Some(Algorithm::Tdes));
        assert_eq!(r.random, [0xA1, 0xB2, 0xC3, 0xD4]);
        assert_eq!(r.mac1, [0x55, 0x95, 0x4E, 0x2A]);
        assert_eq!(r.to_bytes(), bytes);
        assert!(InitLoadResponse::parse(&bytes[..15]).is_err());
        assert!(InitLoadResponse::parse(&[bytes.clone(), vec![0]].concat()).is_err());
    }

    #[test]
    fn init_purchase_debit_proof() {
        let bytes = h("000003E8 0007 000000 01 04 0BADCAFE");
        let r = InitPurchaseResponse::parse(&bytes).unwrap();
        assert_eq!((r.balance, r.offline_atc, r.overdraft_limit), (1000, 7, 0));
        assert_eq!(r.algorithm(), Some(Algorithm::Sm4));
        assert_eq!(r.to_bytes(), bytes);
        assert!(InitPurchaseResponse::parse(&bytes[..14]).is_err());

        let d = DebitResponse::parse(&h("CA673EC9 484C18AB")).unwrap();
        assert_eq!(d.tac, [0xCA, 0x67, 0x3E, 0xC9]);
        assert_eq!(d.mac2, [0x48, 0x4C, 0x18, 0xAB]);
        assert_eq!(d.to_bytes(), h("CA673EC9484C18AB"));
        let p = Proof::parse(&h("9F341DD2 DA04C4A9")).unwrap();
        assert_eq!(p.mac, [0x9F, 0x34, 0x1D, 0xD2]);
        assert_eq!(p.to_bytes(), h("9F341DD2DA04C4A9"));
        assert!(Proof::parse(&[0; 9]).is_err());

        assert_eq!(parse_balance(&h("000003E8")).unwrap(), 1000);
        assert!(parse_balance(&h("0003E8")).is_err());
        assert!(parse_four("TAC", &[0; 5]).is_err());
        assert_eq!(parse_eight("challenge", &[7; 8]).unwrap(), [7; 8]);
    }
}
