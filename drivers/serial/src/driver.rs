//! The `serial` driver as the daemon's registry sees it: options, factory, sessions.
//!
//! Why it looks like this: generic USB-serial bridges (CH340, CP210x, PL2303) are shared by GPS
//! receivers, modems and scales, and gpsd's habit of grabbing any of them is a known pain
//! (peers §10, §13). So this driver claims **only the devices its options name**: a fixed
//! path, or a USB bridge matched by vendor id, product id **and** serial number. It never scans
//! and opens ports to "see what answers".
//!
//! Sessions on the same programmer share one link (one open port, one reader thread), so a
//! second session (the daemon's event watcher, a test) neither fails on the exclusive lock nor
//! steals replies. The port is opened exclusively and closed when the last session ends.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use cardd_reader::{
    ApduTransport, Atr, Capabilities, CardEvent, CardEvents, CardPresence, CardReader, Driver,
    DriverOptions, ObuChannel, ObuTarget, Protocol, ReaderError, ReaderFactory, ReaderInfo,
    ReaderSelector,
};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::SerialError;
use crate::link::{Link, LinkConfig};
use crate::protocol::{code, IccState, Reply, Request, Status, Target};
use crate::DRIVER_NAME;

/// Line speed when the options name none, in bit/s. **A choice**: no public source gives the
/// programmers' host-link rate (vendor DLLs take it as a parameter); 115 200 is what USB-serial
/// programmers commonly run at and carries a 261-byte APDU frame in about 25 ms.
pub const BAUD_DEFAULT: u32 = 115_200;
/// Timeout of HELLO, STATUS and power commands when the options name none, in milliseconds.
/// (APDUs use the reader's APDU timeout, which the daemon passes with every command.)
pub const COMMAND_TIMEOUT_MS_DEFAULT: u64 = 1_000;
/// Longest accepted `command_timeout_ms`, in milliseconds.
pub const COMMAND_TIMEOUT_MS_MAX: u64 = 60_000;
/// Resends of one command after a corrupted reply or a NAK, when the options name none.
pub const RETRIES_DEFAULT: u32 = 3;
/// Most resends the options may ask for.
pub const RETRIES_MAX: u32 = 10;
/// Most devices one driver instance may configure.
pub const DEVICES_MAX: usize = 64;

/// The driver descriptor.
#[derive(Debug, Clone, Copy, Default)]
pub struct SerialDriver;

/// The descriptor the built-in registry registers (`driver = "serial"`).
pub static SERIAL_DRIVER: SerialDriver = SerialDriver;

impl Driver for SerialDriver {
    fn name(&self) -> &'static str {
        DRIVER_NAME
    }

    fn summary(&self) -> &'static str {
        "OBU programmers on a serial port (FF FF-framed transparent APDUs to the ESAM and the ETC card); claims only configured devices"
    }

    fn instantiate(&self, options: &DriverOptions) -> Result<Arc<dyn ReaderFactory>, ReaderError> {
        let options: SerialOptions = options.parse()?;
        Ok(Arc::new(SerialFactory::new(options)?))
    }

    /// The options parse and validate; no port is opened. A configured path that does not
    /// exist now is a warning: the programmer may simply be unplugged.
    fn check(&self, options: &DriverOptions) -> Result<Vec<String>, ReaderError> {
        let options: SerialOptions = options.parse()?;
        options.validate()?;
        let mut warnings = Vec::new();
        if options.devices.is_empty() {
            warnings
                .push("the serial driver has no devices configured: it lists no readers".into());
        }
        for device in &options.devices {
            if let Some(path) = &device.path {
                if !Path::new(path).exists() {
                    warnings.push(format!(
                        "serial device {:?}: {path} does not exist now (programmer unplugged, or \
                         another path: see ls /dev/serial/by-id/)",
                        device.id
                    ));
                }
            }
        }
        Ok(warnings)
    }
}

fn default_baud() -> u32 {
    BAUD_DEFAULT
}
fn default_command_timeout_ms() -> u64 {
    COMMAND_TIMEOUT_MS_DEFAULT
}
fn default_retries() -> u32 {
    RETRIES_DEFAULT
}

/// The driver's configuration table.
///
/// ```toml
/// [[readers]]
/// driver = "serial"
/// [readers.options]
/// baud = 115200                 # default 115200 (a choice; see BAUD_DEFAULT)
/// command_timeout_ms = 1000     # HELLO, STATUS, power commands
/// retries = 3                   # resends after a corrupted reply or a NAK (0..=10)
/// [[readers.options.devices]]
/// id = "desk"                   # listed as serial:desk
/// path = "/dev/ttyS0"
/// [[readers.options.devices]]
/// id = "usb1"
/// name = "Counter 1 programmer"
/// usb = { vid = 0x1A86, pid = 0x7523, serial = "A1B2C3D4" }   # vid/pid also as "1a86"
/// baud = 57600                  # per-device override
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialOptions {
    /// The programmers this instance may open; nothing else is ever touched.
    #[serde(default)]
    pub devices: Vec<DeviceOptions>,
    /// Line speed in bit/s (8N1, no flow control).
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Timeout of HELLO, STATUS and power commands, in milliseconds.
    #[serde(default = "default_command_timeout_ms")]
    pub command_timeout_ms: u64,
    /// Resends of one command after a corrupted reply or a NAK.
    #[serde(default = "default_retries")]
    pub retries: u32,
}

impl Default for SerialOptions {
    fn default() -> Self {
        SerialOptions {
            devices: Vec::new(),
            baud: BAUD_DEFAULT,
            command_timeout_ms: COMMAND_TIMEOUT_MS_DEFAULT,
            retries: RETRIES_DEFAULT,
        }
    }
}

/// One configured programmer: exactly one of `path` and `usb`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceOptions {
    /// Listed as `serial:<id>`.
    pub id: String,
    /// Human name; default `OBU programmer <id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A fixed device path (`/dev/ttyUSB0`, `/dev/serial/by-id/…`, `COM3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A USB bridge matched by VID, PID and serial number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usb: Option<UsbMatch>,
    /// Line speed for this device, overriding the instance's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baud: Option<u32>,
}

impl DeviceOptions {
    /// A device at a fixed path.
    pub fn path(id: impl Into<String>, path: impl Into<String>) -> Self {
        DeviceOptions {
            id: id.into(),
            name: None,
            path: Some(path.into()),
            usb: None,
            baud: None,
        }
    }

    /// A USB bridge matched by VID, PID and serial number.
    pub fn usb(id: impl Into<String>, usb: UsbMatch) -> Self {
        DeviceOptions {
            id: id.into(),
            name: None,
            path: None,
            usb: Some(usb),
            baud: None,
        }
    }

    fn reader_id(&self) -> String {
        format!("{DRIVER_NAME}:{}", self.id)
    }

    fn display_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("OBU programmer {}", self.id))
    }
}

/// Which USB-serial bridge is the programmer. All three must match: many unrelated devices
/// share the cheap bridges' VID/PID, the serial number is what tells them apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsbMatch {
    /// USB vendor id: a number, or hex digits as a string (`"1a86"`, `"0x1A86"`).
    #[serde(deserialize_with = "usb_id")]
    pub vid: u16,
    /// USB product id, written like `vid`.
    #[serde(deserialize_with = "usb_id")]
    pub pid: u16,
    /// The USB serial-number string, exactly.
    pub serial: String,
}

fn usb_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u16, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Number(u16),
        Text(String),
    }
    match Id::deserialize(deserializer)? {
        Id::Number(n) => Ok(n),
        Id::Text(s) => {
            let digits = s.trim_start_matches("0x").trim_start_matches("0X");
            u16::from_str_radix(digits, 16).map_err(|_| {
                serde::de::Error::custom(format!(
                    "{s:?} is not a USB id (a number, or up to 4 hex digits)"
                ))
            })
        }
    }
}

fn config_error(detail: String) -> ReaderError {
    ReaderError::Config {
        driver: DRIVER_NAME.to_owned(),
        detail,
    }
}

impl SerialOptions {
    /// Checks what serde cannot: one of `path`/`usb` per device, unique ids, sane numbers.
    pub fn validate(&self) -> Result<(), ReaderError> {
        if self.devices.len() > DEVICES_MAX {
            return Err(config_error(format!(
                "at most {DEVICES_MAX} devices per driver instance"
            )));
        }
        let check_baud = |baud: u32, whose: &str| {
            if baud == 0 {
                Err(config_error(format!("{whose}baud must be above 0")))
            } else {
                Ok(())
            }
        };
        check_baud(self.baud, "")?;
        if self.command_timeout_ms == 0 || self.command_timeout_ms > COMMAND_TIMEOUT_MS_MAX {
            return Err(config_error(format!(
                "command_timeout_ms must be 1..={COMMAND_TIMEOUT_MS_MAX}"
            )));
        }
        if self.retries > RETRIES_MAX {
            return Err(config_error(format!("retries must be 0..={RETRIES_MAX}")));
        }
        let mut ids = HashSet::new();
        for device in &self.devices {
            let id = &device.id;
            if id.is_empty() || id.chars().any(|c| c.is_control() || c == ':') {
                return Err(config_error(format!(
                    "device id {id:?} must be non-empty, without ':' or control characters"
                )));
            }
            if !ids.insert(id.as_str()) {
                return Err(config_error(format!("device id {id:?} is used twice")));
            }
            match (&device.path, &device.usb) {
                (Some(path), None) if !path.is_empty() => {}
                (None, Some(usb)) if !usb.serial.is_empty() => {}
                (None, Some(_)) => {
                    return Err(config_error(format!(
                        "device {id:?}: usb.serial must not be empty (VID/PID alone would claim every such adapter)"
                    )))
                }
                _ => {
                    return Err(config_error(format!(
                        "device {id:?}: give exactly one of `path` and `usb`"
                    )))
                }
            }
            if let Some(baud) = device.baud {
                check_baud(baud, &format!("device {id:?}: "))?;
            }
        }
        Ok(())
    }
}

/// The port of the first USB bridge in `ports` that matches `usb` on VID, PID and serial
/// number (ports sorted by name, so a dual-interface bridge resolves the same way each time).
pub fn match_usb(ports: &[serialport::SerialPortInfo], usb: &UsbMatch) -> Option<String> {
    let mut matching: Vec<&str> = ports
        .iter()
        .filter(|p| match &p.port_type {
            serialport::SerialPortType::UsbPort(info) => {
                info.vid == usb.vid
                    && info.pid == usb.pid
                    && info.serial_number.as_deref() == Some(usb.serial.as_str())
            }
            _ => false,
        })
        .map(|p| p.port_name.as_str())
        .collect();
    matching.sort_unstable();
    matching.first().map(|s| (*s).to_owned())
}

/// The serial ports the system knows, or `None` when it cannot say.
fn enumerate_ports() -> Option<Vec<serialport::SerialPortInfo>> {
    // serialport's libudev-free Linux scan panics when sysfs is missing (some containers).
    #[cfg(target_os = "linux")]
    if !Path::new("/sys/class/tty").is_dir() {
        tracing::warn!("no /sys/class/tty: USB-matched programmers cannot be found");
        return None;
    }
    match serialport::available_ports() {
        Ok(ports) => Some(ports),
        Err(e) => {
            tracing::warn!("cannot enumerate serial ports: {e}");
            None
        }
    }
}

/// A configured driver instance.
#[derive(Debug)]
pub struct SerialFactory {
    options: SerialOptions,
    capabilities: Capabilities,
    /// Open links by device id; sessions hold the strong references.
    links: Mutex<HashMap<String, Weak<Link>>>,
}

impl SerialFactory {
    /// A factory over the configured devices (nothing is opened until a session is).
    pub fn new(options: SerialOptions) -> Result<SerialFactory, ReaderError> {
        options.validate()?;
        if options.devices.is_empty() {
            tracing::warn!("the serial driver has no devices configured: it lists no readers");
        }
        Ok(SerialFactory {
            options,
            capabilities: Capabilities {
                contact: true,
                obu_channel: true,
                events: true,
                ..Capabilities::default()
            },
            links: Mutex::new(HashMap::new()),
        })
    }

    pub fn options(&self) -> &SerialOptions {
        &self.options
    }

    fn info(&self, device: &DeviceOptions) -> ReaderInfo {
        ReaderInfo {
            id: device.reader_id(),
            name: device.display_name(),
            driver: DRIVER_NAME.to_owned(),
            capabilities: self.capabilities,
        }
    }

    /// The configured devices that are attached now, with their port paths.
    fn attached(&self) -> Vec<(&DeviceOptions, String)> {
        let ports = if self.options.devices.iter().any(|d| d.usb.is_some()) {
            enumerate_ports()
        } else {
            None
        };
        self.options
            .devices
            .iter()
            .filter_map(|device| {
                let path = match (&device.path, &device.usb) {
                    (Some(path), _) => Path::new(path).exists().then(|| path.clone()),
                    (None, Some(usb)) => ports.as_deref().and_then(|p| match_usb(p, usb)),
                    (None, None) => None,
                };
                path.map(|p| (device, p))
            })
            .collect()
    }

    fn link_for(&self, device: &DeviceOptions, path: &str) -> Result<Arc<Link>, ReaderError> {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(link) = links.get(&device.id).and_then(Weak::upgrade) {
            if !link.is_gone() {
                return Ok(link);
            }
        }
        let config = LinkConfig {
            baud: device.baud.unwrap_or(self.options.baud),
            command_timeout: Duration::from_millis(self.options.command_timeout_ms),
            retries: self.options.retries,
        };
        let link = Arc::new(Link::open(&device.reader_id(), path, config)?);
        links.insert(device.id.clone(), Arc::downgrade(&link));
        Ok(link)
    }
}

impl ReaderFactory for SerialFactory {
    fn driver(&self) -> &str {
        DRIVER_NAME
    }

    fn list(&self) -> Result<Vec<ReaderInfo>, ReaderError> {
        Ok(self
            .attached()
            .into_iter()
            .map(|(device, _)| self.info(device))
            .collect())
    }

    fn open(&self, selector: &ReaderSelector) -> Result<Box<dyn CardReader>, ReaderError> {
        let attached = self.attached();
        let infos: Vec<ReaderInfo> = attached.iter().map(|(d, _)| self.info(d)).collect();
        let not_found = || ReaderError::NotFound {
            selector: selector.to_string(),
        };
        let picked = selector.pick(&infos).ok_or_else(not_found)?;
        let (device, path) = attached
            .iter()
            .find(|(d, _)| d.reader_id() == picked.id)
            .ok_or_else(not_found)?;
        let link = self.link_for(device, path)?;
        Ok(Box::new(SerialReader::new(picked.clone(), link)))
    }
}

/// A session on one programmer: the ETC card in the OBU as the main card, the ESAM and the
/// card through [`ObuChannel`], card events from the device.
#[derive(Debug)]
pub struct SerialReader {
    info: ReaderInfo,
    link: Arc<Link>,
    atr: Option<Atr>,
    event_cursor: u64,
}

impl SerialReader {
    fn new(info: ReaderInfo, link: Arc<Link>) -> Self {
        let event_cursor = link.event_cursor();
        SerialReader {
            info,
            link,
            atr: None,
            event_cursor,
        }
    }

    /// What the programmer said about itself (serial number, model, firmware).
    pub fn device_info(&self) -> &crate::protocol::DeviceInfo {
        self.link.info()
    }

    fn command_timeout(&self) -> Duration {
        self.link.config().command_timeout
    }

    /// Maps a reply's status onto the reader layer's errors.
    fn check(
        &mut self,
        reply: Reply,
        command: u8,
        timeout: Duration,
    ) -> Result<Vec<u8>, ReaderError> {
        let reader = self.info.id.clone();
        match reply.status {
            Status::Ok => Ok(reply.body),
            Status::NoCard => {
                self.atr = None;
                Err(ReaderError::NoCard { reader })
            }
            Status::CardRemoved => {
                self.atr = None;
                Err(ReaderError::CardRemoved { reader })
            }
            Status::CardMute => Err(ReaderError::Timeout {
                reader,
                timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            }),
            Status::EsamError => Err(ReaderError::driver(reader, SerialError::Esam)),
            Status::BadFrame => Err(ReaderError::Protocol {
                reader,
                detail: "the device reported a broken frame in a reply".into(),
            }),
            status @ (Status::UnknownCommand | Status::BadParameter) => Err(ReaderError::driver(
                reader,
                SerialError::Rejected { command, status },
            )),
        }
    }

    fn apdu(
        &mut self,
        target: Target,
        command: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, ReaderError> {
        let request = Request::Apdu {
            target,
            apdu: command.to_vec(),
        };
        let reply = self.link.exchange(&request, timeout)?;
        let response = self.check(reply, code::APDU, timeout)?;
        if response.len() < 2 {
            return Err(ReaderError::Protocol {
                reader: self.info.id.clone(),
                detail: format!(
                    "a response APDU of {} bytes has no status word",
                    response.len()
                ),
            });
        }
        Ok(response)
    }

    fn power(&mut self, target: Target) -> Result<Atr, ReaderError> {
        let timeout = self.command_timeout();
        let reply = self.link.exchange(&Request::PowerOn(target), timeout)?;
        let atr = Atr(self.check(reply, code::POWER_ON, timeout)?);
        if target == Target::Icc {
            self.atr = Some(atr.clone());
        }
        Ok(atr)
    }
}

impl ApduTransport for SerialReader {
    fn transmit_raw(&mut self, command: &[u8], timeout: Duration) -> Result<Vec<u8>, ReaderError> {
        self.apdu(Target::Icc, command, timeout)
    }

    fn protocol(&self) -> Protocol {
        Protocol::Other
    }
}

impl CardReader for SerialReader {
    fn info(&self) -> &ReaderInfo {
        &self.info
    }

    fn power_on(&mut self) -> Result<Atr, ReaderError> {
        self.power(Target::Icc)
    }

    fn power_off(&mut self) -> Result<(), ReaderError> {
        let timeout = self.command_timeout();
        let reply = self
            .link
            .exchange(&Request::PowerOff(Target::Icc), timeout)?;
        self.atr = None;
        match self.check(reply, code::POWER_OFF, timeout) {
            Ok(_) | Err(ReaderError::NoCard { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn reset(&mut self) -> Result<Atr, ReaderError> {
        self.power(Target::Icc)
    }

    fn atr(&self) -> Option<Atr> {
        self.atr.clone()
    }

    fn presence(&mut self) -> Result<CardPresence, ReaderError> {
        let slot = self.link.status(self.command_timeout())?;
        Ok(match (slot.obu_present, slot.icc) {
            (false, _) | (true, IccState::Absent) => {
                self.atr = None;
                CardPresence::Absent
            }
            (true, IccState::Present) => CardPresence::Present,
            (true, IccState::Powered) => {
                let atr = Atr(slot.atr);
                self.atr = Some(atr.clone());
                CardPresence::Powered { atr }
            }
        })
    }

    fn obu(&mut self) -> Option<&mut dyn ObuChannel> {
        Some(self)
    }

    fn events(&mut self) -> Option<&mut dyn CardEvents> {
        Some(self)
    }
}

impl ObuChannel for SerialReader {
    fn obu_transmit(
        &mut self,
        target: ObuTarget,
        command: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, ReaderError> {
        self.apdu(target.into(), command, timeout)
    }
}

impl CardEvents for SerialReader {
    fn wait_for_change(&mut self, timeout: Duration) -> Result<Option<CardEvent>, ReaderError> {
        self.link.wait_event(&mut self.event_cursor, timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serialport::{SerialPortInfo, SerialPortType, UsbPortInfo};

    fn usb_port(name: &str, vid: u16, pid: u16, serial: Option<&str>) -> SerialPortInfo {
        SerialPortInfo {
            port_name: name.into(),
            port_type: SerialPortType::UsbPort(UsbPortInfo {
                vid,
                pid,
                serial_number: serial.map(str::to_owned),
                manufacturer: None,
                product: None,
            }),
        }
    }

    #[test]
    fn usb_matching_needs_vid_pid_and_serial() {
        let ports = vec![
            usb_port("/dev/ttyUSB0", 0x1A86, 0x7523, None),
            usb_port("/dev/ttyUSB1", 0x1A86, 0x7523, Some("OTHER")),
            usb_port("/dev/ttyUSB3", 0x10C4, 0xEA60, Some("PROG1")),
            usb_port("/dev/ttyUSB2", 0x1A86, 0x7523, Some("PROG1")),
            SerialPortInfo {
                port_name: "/dev/ttyS0".into(),
                port_type: SerialPortType::Unknown,
            },
        ];
        let m = |vid, pid, serial: &str| UsbMatch {
            vid,
            pid,
            serial: serial.into(),
        };
        assert_eq!(
            match_usb(&ports, &m(0x1A86, 0x7523, "PROG1")).as_deref(),
            Some("/dev/ttyUSB2")
        );
        assert_eq!(
            match_usb(&ports, &m(0x10C4, 0xEA60, "PROG1")).as_deref(),
            Some("/dev/ttyUSB3")
        );
        assert_eq!(match_usb(&ports, &m(0x1A86, 0x7523, "NOPE")), None);
        assert_eq!(match_usb(&ports, &m(0x1A86, 0x7524, "PROG1")), None);
    }

    fn parse(value: serde_json::Value) -> Result<SerialOptions, ReaderError> {
        let options: SerialOptions = DriverOptions::new(DRIVER_NAME, value).parse()?;
        options.validate()?;
        Ok(options)
    }

    #[test]
    fn options_parse_defaults_and_usb_ids() {
        let o = parse(serde_json::json!({})).unwrap();
        assert_eq!(o, SerialOptions::default());
        assert_eq!(o.baud, 115_200);
        let o = parse(serde_json::json!({
            "devices": [
                {"id": "a", "path": "/dev/ttyS0"},
                {"id": "b", "name": "B", "usb": {"vid": "1a86", "pid": 0x7523, "serial": "X"}, "baud": 9600},
                {"id": "c", "usb": {"vid": "0x10C4", "pid": "EA60", "serial": "Y"}}
            ],
            "command_timeout_ms": 250,
            "retries": 0
        }))
        .unwrap();
        assert_eq!(
            o.devices[1].usb.as_ref().map(|u| (u.vid, u.pid)),
            Some((0x1A86, 0x7523))
        );
        assert_eq!(
            o.devices[2].usb.as_ref().map(|u| (u.vid, u.pid)),
            Some((0x10C4, 0xEA60))
        );
        assert_eq!(o.devices[1].baud, Some(9600));
    }

    #[test]
    fn options_reject_typos_ambiguity_and_bad_numbers() {
        let bad = [
            serde_json::json!({"baudrate": 9600}),
            serde_json::json!({"devices": [{"id": "a", "pth": "/dev/x"}]}),
            serde_json::json!({"devices": [{"id": "a"}]}),
            serde_json::json!({"devices": [{"id": "a", "path": "/dev/x", "usb": {"vid": 1, "pid": 2, "serial": "s"}}]}),
            serde_json::json!({"devices": [{"id": "a", "usb": {"vid": 1, "pid": 2}}]}),
            serde_json::json!({"devices": [{"id": "a", "usb": {"vid": 1, "pid": 2, "serial": ""}}]}),
            serde_json::json!({"devices": [{"id": "a", "usb": {"vid": "xyz", "pid": 2, "serial": "s"}}]}),
            serde_json::json!({"devices": [{"id": "a", "path": "/dev/x"}, {"id": "a", "path": "/dev/y"}]}),
            serde_json::json!({"devices": [{"id": "a:b", "path": "/dev/x"}]}),
            serde_json::json!({"devices": [{"id": "a", "path": "/dev/x", "baud": 0}]}),
            serde_json::json!({"baud": 0}),
            serde_json::json!({"command_timeout_ms": 0}),
            serde_json::json!({"retries": 11}),
        ];
        for value in bad {
            let err = parse(value.clone()).expect_err(&value.to_string());
            assert!(matches!(err, ReaderError::Config { .. }), "{value}: {err}");
        }
    }

    #[test]
    fn only_configured_devices_that_exist_are_listed() {
        let factory = SerialFactory::new(SerialOptions {
            devices: vec![
                DeviceOptions::path("gone", "/dev/cardd-no-such-port"),
                DeviceOptions::usb(
                    "usb",
                    UsbMatch {
                        vid: 0xFFFF,
                        pid: 0xFFFF,
                        serial: "cardd-no-such-serial".into(),
                    },
                ),
            ],
            ..SerialOptions::default()
        })
        .unwrap();
        assert!(factory.list().unwrap().is_empty());
        assert!(matches!(
            factory.open(&ReaderSelector::Id("serial:gone".into())),
            Err(ReaderError::NotFound { .. })
        ));
    }
}
