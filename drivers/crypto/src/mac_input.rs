//! Exact byte layouts of the data covered by MAC1, MAC2 and TAC (reference section 2.4).
//!
//! This module exists so that the card (simulator) and the host build MAC input from one
//! place: a field swapped or a wrong width on one side would otherwise only show up as a
//! `9302` (MAC invalid) from a real card. Feed the result to [`crate::purse_mac`].
//!
//! Conventions: amounts and balances are `u32` fen, big-endian; ATCs are `u16` big-endian;
//! the terminal transaction sequence number is `u32` big-endian; terminal ids are 6 bytes;
//! dates are BCD `YYYYMMDD` (4 bytes) and times BCD `hhmmss` (3 bytes); the transaction
//! type is one byte (`01` ED load, `02` EP load, `05` ED purchase, `06` EP purchase,
//! `09` composite purchase, see [`tx_type`]).

/// Transaction type identifiers used in MAC inputs and GET TRANSACTION PROVE.
pub mod tx_type {
    /// Electronic deposit (ED) load.
    pub const ED_LOAD: u8 = 0x01;
    /// Electronic purse (EP) load; ETC and transit cards load the EP.
    pub const EP_LOAD: u8 = 0x02;
    /// Unload.
    pub const UNLOAD: u8 = 0x03;
    /// ED cash withdrawal.
    pub const ED_CASH: u8 = 0x04;
    /// ED purchase.
    pub const ED_PURCHASE: u8 = 0x05;
    /// EP purchase.
    pub const EP_PURCHASE: u8 = 0x06;
    /// Overdraft limit update.
    pub const OVERDRAFT_UPDATE: u8 = 0x07;
    /// Credit purchase.
    pub const CREDIT_PURCHASE: u8 = 0x08;
    /// Composite (CAPP) purchase, e.g. ETC tolls.
    pub const CAPP_PURCHASE: u8 = 0x09;
}

/// Load MAC1 (computed by the card with the load session key, verified by the host):
/// `old_balance(4) || amount(4) || tx_type(1) || terminal(6)` = 15 bytes.
pub fn load_mac1(old_balance: u32, amount: u32, tx_type: u8, terminal: &[u8; 6]) -> Vec<u8> {
    let mut v = Vec::with_capacity(15);
    v.extend_from_slice(&old_balance.to_be_bytes());
    v.extend_from_slice(&amount.to_be_bytes());
    v.push(tx_type);
    v.extend_from_slice(terminal);
    v
}

/// Load MAC2 (computed by the host, verified by the card in CREDIT FOR LOAD):
/// `amount(4) || tx_type(1) || terminal(6) || date(4) || time(3)` = 18 bytes.
pub fn load_mac2(
    amount: u32,
    tx_type: u8,
    terminal: &[u8; 6],
    date: &[u8; 4],
    time: &[u8; 3],
) -> Vec<u8> {
    let mut v = Vec::with_capacity(18);
    v.extend_from_slice(&amount.to_be_bytes());
    v.push(tx_type);
    v.extend_from_slice(terminal);
    v.extend_from_slice(date);
    v.extend_from_slice(time);
    v
}

/// Load TAC (computed by the card with the TAC key):
/// `new_balance(4) || online_atc_before(2) || amount(4) || tx_type(1) || terminal(6) ||
/// date(4) || time(3)` = 24 bytes. The ATC is the value returned by INITIALIZE FOR LOAD,
/// i.e. before the card increments it.
pub fn load_tac(
    new_balance: u32,
    online_atc_before: u16,
    amount: u32,
    tx_type: u8,
    terminal: &[u8; 6],
    date: &[u8; 4],
    time: &[u8; 3],
) -> Vec<u8> {
    let mut v = Vec::with_capacity(24);
    v.extend_from_slice(&new_balance.to_be_bytes());
    v.extend_from_slice(&online_atc_before.to_be_bytes());
    v.extend_from_slice(&amount.to_be_bytes());
    v.push(tx_type);
    v.extend_from_slice(terminal);
    v.extend_from_slice(date);
    v.extend_from_slice(time);
    v
}

/// Purchase MAC1 (computed by the PSAM / terminal, verified by the card in DEBIT FOR
/// PURCHASE): `amount(4) || tx_type(1) || terminal(6) || date(4) || time(3)` = 18 bytes.
pub fn purchase_mac1(
    amount: u32,
    tx_type: u8,
    terminal: &[u8; 6],
    date: &[u8; 4],
    time: &[u8; 3],
) -> Vec<u8> {
    // Same layout as load MAC2.
    load_mac2(amount, tx_type, terminal, date, time)
}

/// Purchase MAC2 (computed by the card, verified by the PSAM): `amount(4)`.
pub fn purchase_mac2(amount: u32) -> Vec<u8> {
    amount.to_be_bytes().to_vec()
}

/// Purchase TAC (computed by the card with the TAC key):
/// `amount(4) || tx_type(1) || terminal(6) || term_txn_seq(4) || date(4) || time(3)` = 22 bytes.
pub fn purchase_tac(
    amount: u32,
    tx_type: u8,
    terminal: &[u8; 6],
    term_txn_seq: u32,
    date: &[u8; 4],
    time: &[u8; 3],
) -> Vec<u8> {
    let mut v = Vec::with_capacity(22);
    v.extend_from_slice(&amount.to_be_bytes());
    v.push(tx_type);
    v.extend_from_slice(terminal);
    v.extend_from_slice(&term_txn_seq.to_be_bytes());
    v.extend_from_slice(date);
    v.extend_from_slice(time);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const TERM: [u8; 6] = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66];
    const DATE: [u8; 4] = [0x20, 0x24, 0x01, 0x02];
    const TIME: [u8; 3] = [0x03, 0x04, 0x05];

    #[test]
    fn layouts() {
        assert_eq!(
            hex::encode_upper(load_mac1(1000, 10000, tx_type::EP_LOAD, &TERM)),
            "000003E80000271002112233445566"
        );
        assert_eq!(
            hex::encode_upper(load_mac2(10000, 2, &TERM, &DATE, &TIME)),
            "000027100211223344556620240102030405"
        );
        assert_eq!(
            hex::encode_upper(load_tac(11000, 5, 10000, 2, &TERM, &DATE, &TIME)),
            "00002AF80005000027100211223344556620240102030405"
        );
        assert_eq!(
            hex::encode_upper(purchase_mac1(100, 6, &TERM, &DATE, &TIME)),
            "000000640611223344556620240102030405"
        );
        assert_eq!(hex::encode_upper(purchase_mac2(100)), "00000064");
        assert_eq!(
            hex::encode_upper(purchase_tac(100, 6, &TERM, 0x102, &DATE, &TIME)),
            "00000064061122334455660000010220240102030405"
        );
    }
}
