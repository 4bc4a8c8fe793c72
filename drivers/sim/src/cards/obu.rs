//! The OBU's embedded secure module (ESAM).
//!
//! OBU issuance writes two files: the MF `EF01` system information (contract, serial, dates and
//! the tamper flag that activation sets to `01`) under the system maintenance key, and the DF01
//! `EF01` vehicle information under the application maintenance key. Both are written with
//! secure-messaging UPDATE BINARY after GET CHALLENGE; the vehicle file can only be read
//! encrypted (`00 B4`). Keys are diversified once by the contract serial.

use cardd_crypto::{Algorithm, Key16};
use serde::{Deserialize, Serialize};

use super::apdu::{array_at, respond, u16_at, unknown_command, Apdu, CardResult, Sw};
use super::cpu::get_challenge;
use super::etc::check_algorithm;
use super::fs::{Cursor, Df, Ef, EfContent, FileTree, ReadAccess, UpdateKey};
use super::hexser;
use super::keys::{algorithm_for_version, is_sm4, EsamKeys, ObuMasters};
use super::rng::SimRng;
use super::IssueError;
use cardd_crypto::gbk;

/// Bytes of MF EF01.
pub const SYSTEM_INFO_BYTES: usize = 27;
/// Bytes of DF01 EF01.
pub const VEHICLE_INFO_BYTES: usize = 59;
/// Offset of the tamper flag in MF EF01.
pub const TAMPER_FLAG_OFFSET: usize = 26;
/// FID of the ESAM application DF.
pub const DF01: u16 = 0xDF01;
/// FID of the information files.
pub const EF01: u16 = 0xEF01;

const KNOWN_INS: &[u8] = &[0xA4, 0xB0, 0x84, 0xD6, 0xB4, 0xF6];

/// DF01 EF01, 59 bytes: plate(12 GBK) colour(2) class(1) user type(1) length(2) width(2)
/// height(2) wheels(1) axles(1) wheelbase(2) load-or-seats(3) description(16 GBK) engine
/// number(14 ASCII). Bytes 16.. are our choice (the engine number is 14 bytes so the layout
/// fits the 59-byte file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VehicleInfo {
    #[serde(with = "hexser::arr")]
    pub plate_gbk: [u8; 12],
    pub plate_colour: u16,
    pub vehicle_class: u8,
    pub vehicle_user_type: u8,
    pub length_mm: u16,
    pub width_mm: u16,
    pub height_mm: u16,
    pub wheels: u8,
    pub axles: u8,
    pub wheelbase_mm: u16,
    /// Three bytes on the card (at most 16,777,215).
    pub load_kg_or_seats: u32,
    #[serde(with = "hexser::arr")]
    pub description_gbk: [u8; 16],
    #[serde(with = "hexser::arr")]
    pub engine_number: [u8; 14],
}

impl VehicleInfo {
    /// The 59 file bytes.
    pub fn to_bytes(&self) -> [u8; VEHICLE_INFO_BYTES] {
        let mut out = [0u8; VEHICLE_INFO_BYTES];
        out[0..12].copy_from_slice(&self.plate_gbk);
        out[12..14].copy_from_slice(&self.plate_colour.to_be_bytes());
        out[14] = self.vehicle_class;
        out[15] = self.vehicle_user_type;
        out[16..18].copy_from_slice(&self.length_mm.to_be_bytes());
        out[18..20].copy_from_slice(&self.width_mm.to_be_bytes());
        out[20..22].copy_from_slice(&self.height_mm.to_be_bytes());
        out[22] = self.wheels;
        out[23] = self.axles;
        out[24..26].copy_from_slice(&self.wheelbase_mm.to_be_bytes());
        out[26..29].copy_from_slice(&self.load_kg_or_seats.min(0xFF_FFFF).to_be_bytes()[1..]);
        out[29..45].copy_from_slice(&self.description_gbk);
        out[45..59].copy_from_slice(&self.engine_number);
        out
    }

    /// Parses the 59 file bytes.
    pub fn parse(bytes: &[u8]) -> Option<VehicleInfo> {
        if bytes.len() != VEHICLE_INFO_BYTES {
            return None;
        }
        let load = array_at::<3>(bytes, 26)?;
        Some(VehicleInfo {
            plate_gbk: array_at(bytes, 0)?,
            plate_colour: u16_at(bytes, 12)?,
            vehicle_class: *bytes.get(14)?,
            vehicle_user_type: *bytes.get(15)?,
            length_mm: u16_at(bytes, 16)?,
            width_mm: u16_at(bytes, 18)?,
            height_mm: u16_at(bytes, 20)?,
            wheels: *bytes.get(22)?,
            axles: *bytes.get(23)?,
            wheelbase_mm: u16_at(bytes, 24)?,
            load_kg_or_seats: u32::from_be_bytes([0, load[0], load[1], load[2]]),
            description_gbk: array_at(bytes, 29)?,
            engine_number: array_at(bytes, 45)?,
        })
    }

    /// The plate, when it is well-formed GBK.
    pub fn plate(&self) -> Option<String> {
        gbk::decode(&self.plate_gbk)
    }
}

/// Everything an issuer decides about one ESAM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObuSpec {
    #[serde(with = "hexser::arr")]
    pub chip_id: [u8; 4],
    #[serde(with = "hexser::arr")]
    pub contract_provider: [u8; 8],
    pub contract_type: u8,
    /// `0x5x` SM4, anything else 3DES.
    pub contract_version: u8,
    /// The OBU number and diversification factor.
    #[serde(with = "hexser::arr")]
    pub contract_serial: [u8; 8],
    #[serde(with = "hexser::arr")]
    pub signed_date: [u8; 4],
    #[serde(with = "hexser::arr")]
    pub expiry_date: [u8; 4],
    /// `00` not activated / tampered, `01` activated.
    pub tamper_flag: u8,
    pub vehicle: VehicleInfo,
    pub rng_seed: Option<u64>,
}

impl ObuSpec {
    /// The 27 bytes of MF EF01.
    pub fn system_info(&self) -> [u8; SYSTEM_INFO_BYTES] {
        let mut out = [0u8; SYSTEM_INFO_BYTES];
        out[0..8].copy_from_slice(&self.contract_provider);
        out[8] = self.contract_type;
        out[9] = self.contract_version;
        out[10..18].copy_from_slice(&self.contract_serial);
        out[18..22].copy_from_slice(&self.signed_date);
        out[22..26].copy_from_slice(&self.expiry_date);
        out[TAMPER_FLAG_OFFSET] = self.tamper_flag;
        out
    }
}

/// What a reset forgets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct EsamVolatile {
    cursor: Cursor,
    challenge: Option<[u8; 4]>,
}

/// An OBU ESAM.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObuEsam {
    #[serde(with = "hexser::arr")]
    chip_id: [u8; 4],
    files: FileTree,
    keys: EsamKeys,
    rng: SimRng,
    #[serde(skip)]
    vol: EsamVolatile,
}

impl ObuEsam {
    /// Personalises an ESAM (system and vehicle files written, keys diversified by the
    /// contract serial). Fails when the masters' algorithm is not the contract version's.
    pub fn issue(spec: &ObuSpec, masters: &ObuMasters) -> Result<ObuEsam, IssueError> {
        check_algorithm(
            algorithm_for_version(spec.contract_version),
            masters.algorithm,
        )?;
        let system = spec.system_info();
        let mf = Df {
            fid: 0x3F00,
            name: Vec::new(),
            efs: vec![Ef::binary(
                EF01,
                0x01,
                system.to_vec(),
                UpdateKey::EsamSystem,
            )],
        };
        let vehicle = Ef {
            fid: EF01,
            sfi: 0x01,
            content: EfContent::Binary(spec.vehicle.to_bytes().to_vec()),
            read: ReadAccess::EncryptedOnly,
            update: Some(UpdateKey::EsamApplication),
        };
        let df01 = Df {
            fid: DF01,
            name: Vec::new(),
            efs: vec![vehicle],
        };
        let seed = spec.rng_seed.unwrap_or_else(|| SimRng::seed_from(&system));
        Ok(ObuEsam {
            chip_id: spec.chip_id,
            files: FileTree {
                dfs: vec![mf, df01],
            },
            keys: EsamKeys::derive(masters, &spec.contract_serial),
            rng: SimRng::new(seed),
            vol: EsamVolatile::default(),
        })
    }

    pub fn chip_id(&self) -> [u8; 4] {
        self.chip_id
    }
    /// MF EF01.
    pub fn system_info(&self) -> &[u8] {
        self.files.binary(0x3F00, EF01).unwrap_or_default()
    }
    /// DF01 EF01 (plain, as the issuer wrote it).
    pub fn vehicle_info(&self) -> &[u8] {
        self.files.binary(DF01, EF01).unwrap_or_default()
    }
    /// MF EF01 bytes 10..18.
    pub fn contract_serial(&self) -> [u8; 8] {
        array_at(self.system_info(), 10).unwrap_or_default()
    }
    /// MF EF01 byte 26: `00` not activated / tampered, `01` activated.
    pub fn tamper_flag(&self) -> u8 {
        self.system_info()
            .get(TAMPER_FLAG_OFFSET)
            .copied()
            .unwrap_or_default()
    }
    pub fn is_activated(&self) -> bool {
        self.tamper_flag() == 0x01
    }
    pub fn algorithm(&self) -> Algorithm {
        self.keys.algorithm
    }
    /// The ESAM's keys (test keys).
    pub fn keys(&self) -> &EsamKeys {
        &self.keys
    }
    /// Forces the next random bytes the ESAM draws.
    pub fn queue_random(&mut self, bytes: &[u8]) {
        self.rng.queue(bytes);
    }

    pub(crate) fn reset(&mut self) {
        self.vol = EsamVolatile::default();
    }

    /// Runs one command.
    pub(crate) fn process(&mut self, bytes: &[u8]) -> Vec<u8> {
        respond(Apdu::parse(bytes).and_then(|apdu| self.dispatch(&apdu)))
    }

    fn dispatch(&mut self, apdu: &Apdu) -> CardResult {
        match (apdu.cla, apdu.ins) {
            (0x00, 0xA4) => self.files.select(&mut self.vol.cursor, apdu),
            (0x00, 0xB0) => self.files.read_binary(&mut self.vol.cursor, apdu),
            (0x00, 0x84) => get_challenge(apdu, &mut self.rng, &mut self.vol.challenge),
            (0x04, 0xD6) => self.sm_update(apdu),
            (0x00, 0xD6) => Err(Sw::SECURITY),
            (0x00, 0xB4) => self.read_encrypted(apdu),
            (0x80, 0xF6) => {
                apdu.expect_p1p2(0x00, 0x03)?;
                Ok(self.chip_id.to_vec())
            }
            (cla, ins) => Err(unknown_command(cla, ins, KNOWN_INS)),
        }
    }

    fn sm_update(&mut self, apdu: &Apdu) -> CardResult {
        let challenge = self.vol.challenge.take();
        let keys = &self.keys;
        let key_for = |key: UpdateKey| -> Option<(Algorithm, Key16)> {
            match key {
                UpdateKey::EsamSystem => Some((keys.algorithm, keys.system_maintenance.clone())),
                UpdateKey::EsamApplication => Some((keys.algorithm, keys.app_maintenance.clone())),
                UpdateKey::Damk => None,
            }
        };
        self.files
            .sm_update(&mut self.vol.cursor, apdu, challenge, &key_for)
    }

    /// READ ENCRYPTED (`00 B4 00 00 0A` random(8) keyId(1) keyVer(1)), DF01 selected: the
    /// vehicle file as ECB under the application encryption key of
    /// `random(8)‖len(1)‖file‖80 00…` (3DES) or `random(8)‖00×8‖len(1)‖file‖80 00…` (SM4).
    fn read_encrypted(&mut self, apdu: &Apdu) -> CardResult {
        apdu.expect_p1p2(0x00, 0x00)?;
        apdu.expect_lc(10)?;
        if self.files.dfs.get(self.vol.cursor.df).map(|d| d.fid) != Some(DF01) {
            return Err(Sw::CONDITIONS);
        }
        let random = array_at::<8>(&apdu.data, 0).ok_or(Sw::WRONG_LENGTH)?;
        let plain = encrypted_read_plaintext(self.keys.algorithm, random, self.vehicle_info());
        cardd_crypto::ecb_encrypt(self.keys.algorithm, &self.keys.app_encryption, &plain)
            .map_err(|_| Sw::UNKNOWN)
    }
}

/// The plaintext of an encrypted read (see [`ObuEsam`]'s `00 B4`), padded `80 00…` to the
/// block size (8 for 3DES, 16 for SM4).
pub fn encrypted_read_plaintext(alg: Algorithm, random: [u8; 8], file: &[u8]) -> Vec<u8> {
    let block = if is_sm4(alg) { 16 } else { 8 };
    let mut out = random.to_vec();
    if is_sm4(alg) {
        out.extend_from_slice(&[0u8; 8]);
    }
    out.push(file.len().min(255) as u8);
    out.extend_from_slice(file);
    out.push(0x80);
    while out.len() % block != 0 {
        out.push(0);
    }
    out
}
