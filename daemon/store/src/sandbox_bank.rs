//! The embedded sandbox bank: the default [`PaymentGateway`] of quota top-ups (额度充值), its
//! payments kept in the daemon's database.
//!
//! [`SandboxBank`] is the embedded default: it pays at once and remembers its payments in the
//! daemon's database (so `query` still knows them after a restart). It can be told to misbehave,
//! for demos and tests, by its [`SandboxMode`] (configuration) or by a word in the remark:
//!
//! | remark contains | the sandbox |
//! |---|---|
//! | `SANDBOX-FAIL` or `沙箱失败` | declines: 余额不足, no money moves |
//! | `SANDBOX-TIMEOUT` or `沙箱超时` | does not answer, and did not pay (a later `query` finds nothing) |
//! | `SANDBOX-LATE` or `沙箱延迟` | does not answer, but paid (a later `query` finds the payment) |

use std::sync::atomic::{AtomicU64, Ordering};

use time::OffsetDateTime;

use cardd_journal::Store;

use cardd_group::payment::{
    PaymentError, PaymentGateway, PaymentReceipt, PaymentRequest, SandboxMode,
};

use cardd_etc::model::CHINA_OFFSET;

/// The sled tree of the sandbox bank's payments.
pub const SANDBOX_TREE: &str = "sandbox_bank";

/// The embedded sandbox bank.
#[derive(Debug)]
pub struct SandboxBank {
    store: Store,
    tree: sled::Tree,
    mode: SandboxMode,
    serials: AtomicU64,
}

impl SandboxBank {
    /// Opens the sandbox's payments in `store`.
    pub fn open(store: &Store, mode: SandboxMode) -> Result<SandboxBank, PaymentError> {
        let tree = store
            .tree(SANDBOX_TREE)
            .map_err(|e| PaymentError::Gateway(e.to_string()))?;
        let serials = AtomicU64::new(tree.len() as u64);
        Ok(SandboxBank {
            store: store.clone(),
            tree,
            mode,
            serials,
        })
    }

    fn record(&self, request: &PaymentRequest) -> Result<PaymentReceipt, PaymentError> {
        if let Some(existing) = self.query(&request.payment_id)? {
            return Ok(existing);
        }
        let now = OffsetDateTime::now_utc().to_offset(CHINA_OFFSET);
        let n = self.serials.fetch_add(1, Ordering::SeqCst) + 1;
        let receipt = PaymentReceipt {
            payment_id: request.payment_id.clone(),
            bank_serial: format!(
                "SB{:04}{:02}{:02}{:02}{:02}{:02}{n:06}",
                now.year(),
                u8::from(now.month()),
                now.day(),
                now.hour(),
                now.minute(),
                now.second()
            ),
            amount_fen: request.amount_fen,
        };
        let bytes =
            serde_json::to_vec(&receipt).map_err(|e| PaymentError::Gateway(e.to_string()))?;
        self.tree
            .insert(request.payment_id.as_bytes(), bytes)
            .map_err(|e| PaymentError::Gateway(e.to_string()))?;
        self.store
            .durable_flush()
            .map_err(|e| PaymentError::Gateway(e.to_string()))?;
        Ok(receipt)
    }
}

fn says(remark: &str, words: &[&str]) -> bool {
    let upper = remark.to_uppercase();
    words.iter().any(|w| upper.contains(w))
}

impl PaymentGateway for SandboxBank {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    fn pay(&self, request: &PaymentRequest) -> Result<PaymentReceipt, PaymentError> {
        if self.mode == SandboxMode::Decline || says(&request.remark, &["SANDBOX-FAIL", "沙箱失败"])
        {
            return Err(PaymentError::Declined("余额不足（沙箱银行）".into()));
        }
        if self.mode == SandboxMode::Timeout
            || says(&request.remark, &["SANDBOX-TIMEOUT", "沙箱超时"])
        {
            return Err(PaymentError::NoAnswer("沙箱银行超时".into()));
        }
        let receipt = self.record(request)?;
        if says(&request.remark, &["SANDBOX-LATE", "沙箱延迟"]) {
            return Err(PaymentError::NoAnswer("沙箱银行已扣款但应答超时".into()));
        }
        Ok(receipt)
    }

    fn query(&self, payment_id: &str) -> Result<Option<PaymentReceipt>, PaymentError> {
        self.tree
            .get(payment_id.as_bytes())
            .map_err(|e| PaymentError::Gateway(e.to_string()))?
            .map(|v| serde_json::from_slice(&v).map_err(|e| PaymentError::Gateway(e.to_string())))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: &str, remark: &str) -> PaymentRequest {
        PaymentRequest {
            payment_id: id.into(),
            amount_fen: 10_000,
            payer: "集团".into(),
            remark: remark.into(),
        }
    }

    #[test]
    fn the_sandbox_pays_declines_and_times_out_as_told() {
        let store = Store::temporary().unwrap();
        let bank = SandboxBank::open(&store, SandboxMode::Approve).unwrap();
        let paid = bank.pay(&request("T1", "工资卡")).unwrap();
        assert!(paid.bank_serial.starts_with("SB"));
        assert_eq!(
            bank.pay(&request("T1", "again")).unwrap(),
            paid,
            "idempotent"
        );
        assert_eq!(bank.query("T1").unwrap(), Some(paid));
        assert!(matches!(
            bank.pay(&request("T2", "sandbox-fail")),
            Err(PaymentError::Declined(_))
        ));
        assert!(matches!(
            bank.pay(&request("T3", "沙箱超时")),
            Err(PaymentError::NoAnswer(_))
        ));
        assert_eq!(bank.query("T3").unwrap(), None, "a timeout paid nothing");
        assert!(matches!(
            bank.pay(&request("T4", "SANDBOX-LATE")),
            Err(PaymentError::NoAnswer(_))
        ));
        assert!(bank.query("T4").unwrap().is_some(), "a late answer paid");
        let declining = SandboxBank::open(&store, SandboxMode::Decline).unwrap();
        assert!(matches!(
            declining.pay(&request("T5", "")),
            Err(PaymentError::Declined(_))
        ));
    }
}
