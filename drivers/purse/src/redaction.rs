//! What an APDU trace must not show, by command of `docs/card-protocol.md`: the recorder of
//! `cardd_reader::trace` knows no card protocol, the daemon hands it [`PurseRedaction`].
//!
//! Hidden: the PIN of VERIFY; MAC1 of INITIALIZE FOR LOAD's response; MAC2 of CREDIT FOR LOAD
//! and its TAC; MAC1 of DEBIT FOR PURCHASE and its TAC and MAC2; GET TRANSACTION PROVE's MAC and
//! TAC; the MAC of every secure-messaging command (CLA `04`, e.g. UPDATE BINARY of OBU
//! issuance); and the whole data of a key-writing command (INS `D4`, WRITE KEY), which no flow
//! sends today.

use cardd_reader::trace::{Hide, Redaction};

/// The redaction table of cardd's card protocols.
#[derive(Debug, Clone, Copy, Default)]
pub struct PurseRedaction;

/// The last `n` bytes of `data`.
fn last(data: &[u8], n: usize, what: &'static str) -> Hide {
    Hide {
        start: data.len().saturating_sub(n),
        len: n,
        what,
    }
}

impl Redaction for PurseRedaction {
    fn command(&self, header: [u8; 4], data: &[u8]) -> Vec<Hide> {
        let [cla, ins, _, _] = header;
        let mut out = Vec::new();
        match ins {
            // VERIFY PIN.
            0x20 => out.push(Hide::all("PIN")),
            // CREDIT FOR LOAD: date(4) time(3) MAC2(4).
            0x52 => out.push(Hide {
                start: 7,
                len: 4,
                what: "MAC2",
            }),
            // DEBIT FOR PURCHASE: termSeq(4) date(4) time(3) MAC1(4).
            0x54 => out.push(Hide {
                start: 11,
                len: 4,
                what: "MAC1",
            }),
            // WRITE KEY: key material.
            0xD4 => out.push(Hide::all("key")),
            _ => {}
        }
        // Secure messaging: the command ends with its MAC.
        if cla & 0x0C != 0 && out.is_empty() {
            out.push(last(data, 4, "MAC"));
        }
        out
    }

    fn response(&self, header: [u8; 4], data: &[u8]) -> Vec<Hide> {
        match header {
            // INITIALIZE FOR LOAD: balance(4) ATC(2) keyVer(1) alg(1) random(4) MAC1(4).
            [_, 0x50, 0x00, _] => vec![last(data, 4, "MAC1")],
            // CREDIT FOR LOAD: TAC(4).
            [_, 0x52, ..] => vec![Hide::all("TAC")],
            // DEBIT FOR PURCHASE: TAC(4) MAC2(4).
            [_, 0x54, ..] => vec![Hide::all("TAC, MAC2")],
            // GET TRANSACTION PROVE: MAC(4) TAC(4).
            [_, 0x5A, ..] => vec![Hide::all("MAC, TAC")],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands;
    use cardd_reader::CommandApdu;

    fn hidden(cmd: &CommandApdu) -> Vec<(usize, usize, &'static str)> {
        PurseRedaction
            .command([cmd.cla, cmd.ins, cmd.p1, cmd.p2], &cmd.data)
            .into_iter()
            .map(|h| (h.start, h.len.min(cmd.data.len() - h.start), h.what))
            .collect()
    }

    #[test]
    fn pins_macs_and_keys_are_hidden_and_reads_are_not() {
        let verify = commands::verify_pin(&crate::Pin::ascii("123456").unwrap());
        assert_eq!(hidden(&verify), [(0, 6, "PIN")]);
        let credit = commands::credit_for_load(&[0x20, 0x26, 0x12, 0x07], &[1, 2, 3], [9; 4]);
        assert_eq!(hidden(&credit), [(7, 4, "MAC2")]);
        let debit = commands::debit_for_purchase(1, &[0x20, 0x26, 0x12, 0x07], &[1, 2, 3], [9; 4]);
        assert_eq!(hidden(&debit), [(11, 4, "MAC1")]);
        let sm =
            commands::update_binary_sm(crate::Sfi::new(1).unwrap(), 0, &[1, 2, 3], [9; 4]).unwrap();
        assert_eq!(hidden(&sm), [(3, 4, "MAC")]);
        assert!(hidden(&commands::select_file(0x1001)).is_empty());
        assert!(hidden(&commands::initialize_for_load(1, 100, &[0; 6])).is_empty());
        let init = PurseRedaction.response([0x80, 0x50, 0x00, 0x02], &[0; 16]);
        assert_eq!(init, [last(&[0; 16], 4, "MAC1")]);
        let purchase = PurseRedaction.response([0x80, 0x50, 0x01, 0x02], &[0; 15]);
        assert!(purchase.is_empty());
        assert!(PurseRedaction
            .response([0x80, 0x5C, 0x00, 0x02], &[0; 4])
            .is_empty());
    }
}
