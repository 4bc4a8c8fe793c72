//! A card's file tree and the ISO 7816-4 file commands every simulated card shares.
//!
//! ETC cards, city cards and OBU ESAMs differ in which files they hold and who may read or
//! write them, not in how SELECT, READ BINARY, READ RECORD and the secure-messaging UPDATE
//! BINARY work. This module holds that common part once: a flat tree of DFs (index 0 is the
//! MF), the current-file cursor, and the length rules of `docs/card-protocol.md` (`6Cxx` for a
//! too-large `Le`, `6B00` past the end, `6A82` for a missing file).

use cardd_crypto::{Algorithm, Key16};
use serde::{Deserialize, Serialize};

use super::apdu::{Apdu, CardResult, Sw};
use super::hexser;

/// The key that authorises a secure-messaging update of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum UpdateKey {
    /// The card's application maintenance key (ETC and city cards).
    Damk,
    /// The ESAM system maintenance key (MF EF01).
    EsamSystem,
    /// The ESAM application maintenance key (DF01 EF01).
    EsamApplication,
}

/// How a file may be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ReadAccess {
    Plain,
    /// Only through the ESAM's encrypted read (`00 B4`); READ BINARY gives `6982`.
    EncryptedOnly,
}

/// What an elementary file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum EfContent {
    Binary(#[serde(with = "hexser::vec")] Vec<u8>),
    /// One fixed record, read as record 1 or `AA` (the `0019` composite record).
    Record(#[serde(with = "hexser::vec")] Vec<u8>),
    /// The purse's cyclic transaction log; its records live in the purse.
    Log,
}

/// An elementary file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Ef {
    pub fid: u16,
    pub sfi: u8,
    pub content: EfContent,
    pub read: ReadAccess,
    pub update: Option<UpdateKey>,
}

impl Ef {
    /// A plainly readable binary file updated under `update`.
    pub(crate) fn binary(fid: u16, sfi: u8, data: Vec<u8>, update: UpdateKey) -> Ef {
        Ef {
            fid,
            sfi,
            content: EfContent::Binary(data),
            read: ReadAccess::Plain,
            update: Some(update),
        }
    }
}

/// A dedicated file (the MF, an ADF, the ESAM's DF01).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Df {
    pub fid: u16,
    /// DF name (AID); empty when the DF is only selectable by FID.
    #[serde(with = "hexser::vec")]
    pub name: Vec<u8>,
    pub efs: Vec<Ef>,
}

/// The whole tree; `dfs[0]` is the MF.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct FileTree {
    pub dfs: Vec<Df>,
}

/// The current DF and EF (volatile: reset selects the MF).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub df: usize,
    pub ef: Option<usize>,
}

impl FileTree {
    /// The DF with `fid`, by index.
    pub(crate) fn df_index(&self, fid: u16) -> Option<usize> {
        self.dfs.iter().position(|d| d.fid == fid)
    }

    fn ef(&self, cursor: Cursor, index: usize) -> Option<&Ef> {
        self.dfs.get(cursor.df)?.efs.get(index)
    }

    /// The file `ef_fid` of DF `df_fid`.
    pub(crate) fn file(&self, df_fid: u16, ef_fid: u16) -> Option<&Ef> {
        self.dfs
            .iter()
            .find(|d| d.fid == df_fid)?
            .efs
            .iter()
            .find(|e| e.fid == ef_fid)
    }

    fn file_mut(&mut self, df_fid: u16, ef_fid: u16) -> Option<&mut Ef> {
        self.dfs
            .iter_mut()
            .find(|d| d.fid == df_fid)?
            .efs
            .iter_mut()
            .find(|e| e.fid == ef_fid)
    }

    /// The bytes of binary file `ef_fid` in DF `df_fid`.
    pub(crate) fn binary(&self, df_fid: u16, ef_fid: u16) -> Option<&[u8]> {
        match &self.file(df_fid, ef_fid)?.content {
            EfContent::Binary(data) | EfContent::Record(data) => Some(data),
            EfContent::Log => None,
        }
    }

    /// Replaces the content of binary or record file `ef_fid` in DF `df_fid` (same length only).
    pub(crate) fn set_content(&mut self, df_fid: u16, ef_fid: u16, bytes: &[u8]) -> bool {
        match self.file_mut(df_fid, ef_fid).map(|ef| &mut ef.content) {
            Some(EfContent::Binary(data) | EfContent::Record(data))
                if data.len() == bytes.len() =>
            {
                data.copy_from_slice(bytes);
                true
            }
            _ => false,
        }
    }

    /// SELECT by FID (`P1 00`) or DF name (`P1 04`); `P2 0C` asks for no FCI.
    pub(crate) fn select(&self, cursor: &mut Cursor, apdu: &Apdu) -> CardResult {
        let want_fci = match apdu.p2 {
            0x00 => true,
            0x0C => false,
            _ => return Err(Sw::WRONG_P1P2),
        };
        let target = match apdu.p1 {
            0x00 => self.find_by_fid(*cursor, apdu)?,
            0x04 => self.find_by_name(apdu)?,
            _ => return Err(Sw::WRONG_P1P2),
        };
        *cursor = target;
        Ok(if want_fci {
            self.fci(target)
        } else {
            Vec::new()
        })
    }

    fn find_by_fid(&self, cursor: Cursor, apdu: &Apdu) -> Result<Cursor, Sw> {
        apdu.expect_lc(2)?;
        let fid = super::apdu::u16_at(&apdu.data, 0).ok_or(Sw::WRONG_LENGTH)?;
        if let Some(df) = self.df_index(fid) {
            return Ok(Cursor { df, ef: None });
        }
        let efs = &self.dfs.get(cursor.df).ok_or(Sw::FILE_NOT_FOUND)?.efs;
        let ef = efs
            .iter()
            .position(|e| e.fid == fid)
            .ok_or(Sw::FILE_NOT_FOUND)?;
        Ok(Cursor {
            df: cursor.df,
            ef: Some(ef),
        })
    }

    fn find_by_name(&self, apdu: &Apdu) -> Result<Cursor, Sw> {
        if apdu.data.is_empty() || apdu.data.len() > 16 {
            return Err(Sw::WRONG_LENGTH);
        }
        let df = self
            .dfs
            .iter()
            .position(|d| !d.name.is_empty() && d.name == apdu.data)
            .ok_or(Sw::FILE_NOT_FOUND)?;
        Ok(Cursor { df, ef: None })
    }

    /// FCI of a selection: `6F L 84 n name` for a named DF, nothing otherwise.
    fn fci(&self, target: Cursor) -> Vec<u8> {
        match self.dfs.get(target.df) {
            Some(df) if target.ef.is_none() && !df.name.is_empty() => {
                let n = df.name.len().min(16) as u8;
                let mut out = vec![0x6F, n + 2, 0x84, n];
                out.extend_from_slice(&df.name);
                out
            }
            _ => Vec::new(),
        }
    }

    /// Resolves `P1 P2` of READ/UPDATE BINARY to (EF index in the current DF, offset).
    fn binary_target(&self, cursor: Cursor, p1: u8, p2: u8) -> Result<(usize, usize), Sw> {
        if p1 & 0x80 == 0 {
            let ef = cursor.ef.ok_or(Sw::FILE_NOT_FOUND)?;
            return Ok((ef, usize::from(u16::from_be_bytes([p1, p2]))));
        }
        if p1 & 0x60 != 0 {
            return Err(Sw::WRONG_P1P2);
        }
        Ok((self.sfi_index(cursor, p1 & 0x1F)?, usize::from(p2)))
    }

    fn sfi_index(&self, cursor: Cursor, sfi: u8) -> Result<usize, Sw> {
        let df = self.dfs.get(cursor.df).ok_or(Sw::FILE_NOT_FOUND)?;
        df.efs
            .iter()
            .position(|e| e.sfi == sfi && sfi != 0)
            .ok_or(Sw::FILE_NOT_FOUND)
    }

    /// READ BINARY (`00 B0`).
    pub(crate) fn read_binary(&self, cursor: &mut Cursor, apdu: &Apdu) -> CardResult {
        let (index, offset) = self.binary_target(*cursor, apdu.p1, apdu.p2)?;
        let ef = self.ef(*cursor, index).ok_or(Sw::FILE_NOT_FOUND)?;
        if ef.read != ReadAccess::Plain {
            return Err(Sw::SECURITY);
        }
        let EfContent::Binary(data) = &ef.content else {
            return Err(Sw::INCOMPATIBLE_FILE);
        };
        cursor.ef = Some(index);
        slice_for_le(data, offset, apdu.le)
    }

    /// READ RECORD (`00 B2 n (SFI<<3|4)`); `log(n)` supplies the records of the purse log.
    pub(crate) fn read_record(
        &self,
        cursor: &mut Cursor,
        apdu: &Apdu,
        log: &dyn Fn(u8) -> Option<Vec<u8>>,
    ) -> CardResult {
        if apdu.p2 & 0x07 != 0x04 {
            return Err(Sw::WRONG_P1P2);
        }
        let index = match apdu.p2 >> 3 {
            0 => cursor.ef.ok_or(Sw::FILE_NOT_FOUND)?,
            sfi => self.sfi_index(*cursor, sfi)?,
        };
        let ef = self.ef(*cursor, index).ok_or(Sw::FILE_NOT_FOUND)?;
        if ef.read != ReadAccess::Plain {
            return Err(Sw::SECURITY);
        }
        let record = match &ef.content {
            EfContent::Binary(_) => return Err(Sw::INCOMPATIBLE_FILE),
            EfContent::Record(data) if matches!(apdu.p1, 0x01 | 0xAA) => data.clone(),
            EfContent::Record(_) => return Err(Sw::RECORD_NOT_FOUND),
            EfContent::Log => log(apdu.p1).ok_or(Sw::RECORD_NOT_FOUND)?,
        };
        cursor.ef = Some(index);
        match apdu.le {
            None | Some(256) => Ok(record),
            Some(n) if n as usize > record.len() => Err(Sw::exact_length(record.len())),
            Some(n) => Ok(record.get(..n as usize).unwrap_or_default().to_vec()),
        }
    }

    /// UPDATE BINARY with secure messaging (`04 D6`): the MAC is
    /// `secure_messaging_mac(alg, key, challenge, header‖data)`; the challenge is spent whatever
    /// the outcome; nothing is written unless the MAC is right and the data fits.
    pub(crate) fn sm_update(
        &mut self,
        cursor: &mut Cursor,
        apdu: &Apdu,
        challenge: Option<[u8; 4]>,
        key_for: &dyn Fn(UpdateKey) -> Option<(Algorithm, Key16)>,
    ) -> CardResult {
        let challenge = challenge.ok_or(Sw::CONDITIONS)?;
        let (index, offset) = self.binary_target(*cursor, apdu.p1, apdu.p2)?;
        let ef = self.ef(*cursor, index).ok_or(Sw::FILE_NOT_FOUND)?;
        let (alg, key) = ef.update.and_then(key_for).ok_or(Sw::SECURITY)?;
        let split = apdu
            .data
            .len()
            .checked_sub(4)
            .filter(|n| *n > 0)
            .ok_or(Sw::WRONG_LENGTH)?;
        let (payload, mac) = apdu.data.split_at(split);
        let mut input = apdu.header_with_lc().to_vec();
        input.extend_from_slice(payload);
        let expected = cardd_crypto::secure_messaging_mac(alg, &key, challenge, &input);
        if !cardd_crypto::mac_eq(&expected, mac) {
            return Err(Sw::SM_WRONG);
        }
        self.write(*cursor, index, offset, payload)?;
        cursor.ef = Some(index);
        Ok(Vec::new())
    }

    fn write(
        &mut self,
        cursor: Cursor,
        index: usize,
        offset: usize,
        payload: &[u8],
    ) -> Result<(), Sw> {
        let ef = self
            .dfs
            .get_mut(cursor.df)
            .and_then(|d| d.efs.get_mut(index))
            .ok_or(Sw::FILE_NOT_FOUND)?;
        let EfContent::Binary(data) = &mut ef.content else {
            return Err(Sw::INCOMPATIBLE_FILE);
        };
        if offset >= data.len() {
            return Err(Sw::OFFSET_OUTSIDE);
        }
        let end = offset
            .checked_add(payload.len())
            .filter(|end| *end <= data.len())
            .ok_or(Sw::WRONG_LENGTH)?;
        data.get_mut(offset..end)
            .ok_or(Sw::WRONG_LENGTH)?
            .copy_from_slice(payload);
        Ok(())
    }
}

/// The READ BINARY length rule: `Le` 00 (or absent) reads up to the end of the file (at most
/// 256 bytes), a larger `Le` than what remains is `6Cxx`, an offset at or past the end `6B00`.
pub(crate) fn slice_for_le(data: &[u8], offset: usize, le: Option<u32>) -> CardResult {
    let remaining = data
        .len()
        .checked_sub(offset)
        .filter(|r| *r > 0)
        .ok_or(Sw::OFFSET_OUTSIDE)?;
    let take = match le {
        None | Some(256) => remaining.min(256),
        Some(n) if n as usize > remaining => return Err(Sw::exact_length(remaining)),
        Some(n) => n as usize,
    };
    let end = offset.checked_add(take).ok_or(Sw::OFFSET_OUTSIDE)?;
    data.get(offset..end)
        .map(<[u8]>::to_vec)
        .ok_or(Sw::OFFSET_OUTSIDE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn le_rules() {
        let data = [1u8, 2, 3, 4];
        assert_eq!(slice_for_le(&data, 0, Some(256)), Ok(data.to_vec()));
        assert_eq!(slice_for_le(&data, 1, Some(2)), Ok(vec![2, 3]));
        assert_eq!(slice_for_le(&data, 1, Some(4)), Err(Sw(0x6C03)));
        assert_eq!(slice_for_le(&data, 4, None), Err(Sw::OFFSET_OUTSIDE));
        assert_eq!(
            slice_for_le(&data, usize::MAX, Some(1)),
            Err(Sw::OFFSET_OUTSIDE)
        );
    }
}
