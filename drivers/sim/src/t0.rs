//! T=0 emulation: the card side of `61xx` / GET RESPONSE and `6Cxx`.
//!
//! Real contact cards on T=0 cannot send response data to a case 4 command directly; they
//! answer `61xx` and hand the data over on GET RESPONSE, and they answer a case 2 command whose
//! `Le` is wrong with `6Cxx`. The reader layer (`cardd_reader::transmit_chained`) handles both;
//! this module makes a simulated reader behave that way so that path is exercised in tests.

use cardd_reader::CommandApdu;

use crate::cards::SimCard;

/// `6985`: GET RESPONSE with nothing waiting.
const NOTHING_WAITING: [u8; 2] = [0x69, 0x85];

/// Runs `command` on `card` as a T=0 card would. `pending` holds the response that GET
/// RESPONSE hands out (any other command discards it).
pub(crate) fn exchange(
    card: &mut SimCard,
    pending: &mut Option<Vec<u8>>,
    command: &[u8],
) -> Vec<u8> {
    if matches!(command, [cla, 0xC0, ..] if cla & 0xFC == 0) {
        return get_response(pending, command);
    }
    *pending = None;
    match CommandApdu::parse(command) {
        Ok(cmd) if cmd.data.is_empty() && cmd.le.is_some() => {
            case2(card, command, cmd.le.unwrap_or(256))
        }
        _ => case34(card, pending, command),
    }
}

/// Case 2: data comes back directly when `Le` is exact; otherwise `6Cxx` and the command is
/// not executed (it ran on a copy of the card that is thrown away).
fn case2(card: &mut SimCard, command: &[u8], le: u32) -> Vec<u8> {
    let mut trial = card.clone();
    let response = trial.process(command);
    let data_len = response.len().saturating_sub(2);
    if data_len > 0 && data_len != le as usize {
        return vec![0x6C, data_len.min(256) as u8];
    }
    *card = trial;
    response
}

/// Case 1, 3 and 4: data is announced with `61xx` and kept for GET RESPONSE.
fn case34(card: &mut SimCard, pending: &mut Option<Vec<u8>>, command: &[u8]) -> Vec<u8> {
    let response = card.process(command);
    let data_len = response.len().saturating_sub(2);
    if data_len == 0 {
        return response;
    }
    *pending = Some(response);
    vec![0x61, data_len.min(256) as u8]
}

/// GET RESPONSE (`00 C0 00 00 Le`): up to `Le` bytes, `61xx` while more remain, `6Cxx` when
/// `Le` asks for more than there is.
fn get_response(pending: &mut Option<Vec<u8>>, command: &[u8]) -> Vec<u8> {
    let Ok(cmd) = CommandApdu::parse(command) else {
        return vec![0x67, 0x00];
    };
    let Some(buffer) = pending.take() else {
        return NOTHING_WAITING.to_vec();
    };
    let split = buffer.len().saturating_sub(2);
    let (data, sw) = buffer.split_at(split);
    let le = cmd.le.unwrap_or(256) as usize;
    if le > data.len() && le != 256 {
        let answer = vec![0x6C, data.len().min(256) as u8];
        *pending = Some(buffer);
        return answer;
    }
    let take = le.min(data.len());
    let (now, rest) = data.split_at(take);
    let mut out = now.to_vec();
    if rest.is_empty() {
        out.extend_from_slice(sw);
    } else {
        out.extend_from_slice(&[0x61, rest.len().min(256) as u8]);
        let mut remaining = rest.to_vec();
        remaining.extend_from_slice(sw);
        *pending = Some(remaining);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::demo_etc_card;

    #[test]
    fn case4_goes_through_get_response_in_parts() {
        let mut card = demo_etc_card();
        let mut pending = None;
        // SELECT ADF by FID: FCI comes back through 61xx.
        let r = exchange(
            &mut card,
            &mut pending,
            &hex::decode("00A40000021001").unwrap(),
        );
        assert_eq!(r, [0x61, 13]);
        let part = exchange(&mut card, &mut pending, &[0x00, 0xC0, 0x00, 0x00, 0x05]);
        assert_eq!(part.len(), 7);
        assert_eq!(&part[5..], [0x61, 8]);
        let too_much = exchange(&mut card, &mut pending, &[0x00, 0xC0, 0x00, 0x00, 0x09]);
        assert_eq!(too_much, [0x6C, 8]);
        let rest = exchange(&mut card, &mut pending, &[0x00, 0xC0, 0x00, 0x00, 0x08]);
        assert_eq!(&rest[8..], [0x90, 0x00]);
        assert_eq!(
            exchange(&mut card, &mut pending, &[0x00, 0xC0, 0x00, 0x00, 0x08]),
            NOTHING_WAITING
        );
    }

    #[test]
    fn case2_with_wrong_le_is_6cxx_and_not_executed() {
        let mut card = demo_etc_card();
        let mut pending = None;
        exchange(
            &mut card,
            &mut pending,
            &hex::decode("00A40000021001").unwrap(),
        );
        let r = exchange(&mut card, &mut pending, &hex::decode("805C000200").unwrap());
        assert_eq!(r, [0x6C, 0x04]);
        let r = exchange(&mut card, &mut pending, &hex::decode("805C000204").unwrap());
        assert_eq!(r, hex::decode("000027109000").unwrap());
    }
}
