//! Fault injection for simulated readers.
//!
//! The money flows of cardd must survive a card pulled mid-command, a lost response, a
//! corrupted status word, a different card presented halfway, and a reader unplugged. A
//! [`FaultPlan`] schedules such events at exact exchange numbers on one reader so each branch
//! of recovery can be driven deterministically; every fault fires once.

use serde::{Deserialize, Serialize};

use crate::cards::SimCard;

/// Most faults one plan may hold.
pub const FAULTS_MAX: usize = 64;

/// What goes wrong at one exchange.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The card leaves before the command reaches it: nothing executes, the card goes to the
    /// reader's pocket, the exchange fails with `CardRemoved`.
    RemoveBeforeExec,
    /// The card executes the command, then leaves before the response comes back: the card
    /// (changed) goes to the pocket, the exchange fails with `CardRemoved`.
    RemoveAfterExec,
    /// No answer within the timeout (reported at once, no real sleep). With `executed` the card
    /// ran the command first.
    Timeout { executed: bool },
    /// The card executes the command; the status word comes back with SW1 inverted
    /// (`9000` → `6F00`), data untouched.
    GarbledSw,
    /// From this exchange on a different card is presented (freshly powered); the original
    /// goes to the pocket. The exchange itself runs on the new card.
    SwapCard(Box<SimCard>),
    /// The reader disappears before the command is sent: the exchange fails with `ReaderGone`,
    /// the cards stay in their slots, `SimWorld::replug_reader` brings it back.
    ReaderUnplug,
}

/// Faults at 1-based exchange numbers of one reader (every `transmit_raw` or `obu_transmit`
/// counts, GET RESPONSE included; see `SimWorld::apdu_count`), and faults at the next command
/// with a given class and instruction, whenever it comes (a demo pulls a card at the next
/// CREDIT FOR LOAD without counting exchanges).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FaultPlan {
    faults: Vec<(u64, FaultKind)>,
    /// `(CLA, INS, fault)`: fires at the next command starting with these two bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    on_command: Vec<(u8, u8, FaultKind)>,
}

impl FaultPlan {
    pub fn new() -> Self {
        FaultPlan::default()
    }

    /// Adds a fault at exchange `at_apdu`. When two faults share a number the first added
    /// fires and the later one is dropped; past [`FAULTS_MAX`] faults further ones are ignored.
    pub fn at(mut self, at_apdu: u64, kind: FaultKind) -> Self {
        if self.faults.len() < FAULTS_MAX && !self.faults.iter().any(|(n, _)| *n == at_apdu) {
            self.faults.push((at_apdu, kind));
        }
        self
    }

    /// Adds a fault at the next command whose class and instruction bytes are `cla` and `ins`
    /// (`0x80, 0x52`: the next CREDIT FOR LOAD). Numbered faults fire first when both match;
    /// past [`FAULTS_MAX`] faults further ones are ignored.
    pub fn on_command(mut self, cla: u8, ins: u8, kind: FaultKind) -> Self {
        if self.faults.len() + self.on_command.len() < FAULTS_MAX {
            self.on_command.push((cla, ins, kind));
        }
        self
    }

    /// A plan of one fault.
    pub fn once(at_apdu: u64, kind: FaultKind) -> Self {
        FaultPlan::new().at(at_apdu, kind)
    }

    /// Faults not fired yet.
    pub fn pending(&self) -> usize {
        self.faults.len() + self.on_command.len()
    }

    pub fn is_empty(&self) -> bool {
        self.faults.is_empty() && self.on_command.is_empty()
    }

    /// Removes and returns the fault of exchange `n`; faults scheduled before `n` that can no
    /// longer fire are dropped too.
    pub(crate) fn take(&mut self, n: u64) -> Option<FaultKind> {
        let index = self.faults.iter().position(|(at, _)| *at == n);
        let fault = index.map(|i| self.faults.swap_remove(i).1);
        self.faults.retain(|(at, _)| *at > n);
        fault
    }

    /// The fault of exchange `n` carrying `command`: the numbered one if any, else the first
    /// fault waiting for the command's class and instruction (removed as it fires).
    pub(crate) fn take_for(&mut self, n: u64, command: &[u8]) -> Option<FaultKind> {
        if let Some(fault) = self.take(n) {
            return Some(fault);
        }
        let (cla, ins) = (*command.first()?, *command.get(1)?);
        let index = self
            .on_command
            .iter()
            .position(|(c, i, _)| *c == cla && *i == ins)?;
        Some(self.on_command.remove(index).2)
    }
}

/// `sw` with SW1 inverted (`9000` → `6F00`): what [`FaultKind::GarbledSw`] does.
pub fn garble(response: &mut [u8]) {
    let len = response.len();
    if let Some(sw1) = len.checked_sub(2).and_then(|i| response.get_mut(i)) {
        *sw1 = !*sw1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_fault_fires_once_and_stale_ones_are_dropped() {
        let mut plan = FaultPlan::new()
            .at(3, FaultKind::GarbledSw)
            .at(3, FaultKind::ReaderUnplug)
            .at(1, FaultKind::RemoveBeforeExec);
        assert_eq!(plan.pending(), 2);
        assert!(plan.take(2).is_none());
        assert_eq!(plan.pending(), 1, "the fault at 1 can no longer fire");
        assert!(matches!(plan.take(3), Some(FaultKind::GarbledSw)));
        assert!(plan.take(3).is_none());
        assert!(plan.is_empty());
        let mut r = vec![0x01, 0x90, 0x00];
        garble(&mut r);
        assert_eq!(r, [0x01, 0x6F, 0x00]);
        let mut short = vec![0x90];
        garble(&mut short);
        assert_eq!(short, [0x90]);
    }

    #[test]
    fn a_command_fault_waits_for_its_command() {
        let mut plan = FaultPlan::new().on_command(0x80, 0x52, FaultKind::RemoveAfterExec);
        assert_eq!(plan.pending(), 1);
        assert!(plan.take_for(1, &[0x00, 0xA4, 0x00, 0x00]).is_none());
        assert!(plan.take_for(2, &[0x80]).is_none(), "a short command");
        assert!(matches!(
            plan.take_for(3, &[0x80, 0x52, 0x00, 0x00, 0x0B]),
            Some(FaultKind::RemoveAfterExec)
        ));
        assert!(
            plan.take_for(4, &[0x80, 0x52, 0x00, 0x00]).is_none(),
            "fires once"
        );
        assert!(plan.is_empty());
        let json =
            serde_json::to_string(&FaultPlan::new().on_command(0x80, 0x52, FaultKind::GarbledSw))
                .unwrap();
        let back: FaultPlan = serde_json::from_str(&json).unwrap();
        assert_eq!(back.pending(), 1, "{json}");
    }

    #[test]
    fn plans_serialise() {
        let plan = FaultPlan::once(2, FaultKind::Timeout { executed: true });
        let json = serde_json::to_string(&plan).unwrap();
        assert!(json.contains("timeout"), "{json}");
        let back: FaultPlan = serde_json::from_str(&json).unwrap();
        assert_eq!(back.pending(), 1);
    }
}
