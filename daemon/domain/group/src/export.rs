//! The rows of the group query pages (充值查询, 额度充值查询), their statistics, and their export
//! to CSV and XLSX with zh-CN headers.
//!
//! A query returns rows; an export writes exactly those rows, one line per row in the same order,
//! under the same headers, and nothing else (statistics stay on the page). Each cell has a kind
//! ([`Cell`]) so that a spreadsheet opens it as what it is:
//!
//! - **Amounts**: in the CSV the same decimal yuan text the page shows (`20.00`, exact to the
//!   fen); in the XLSX a number with the number format `0.00`, so the sheet can sum them.
//! - **Card numbers and other long digit strings** (a 20-digit card number would otherwise be
//!   rounded to 15 significant digits and shown as `6.10E+19`): in the XLSX a text cell; in the
//!   CSV the digits after a leading tab. Excel's and LibreOffice's number recognition on opening
//!   a CSV does not skip a tab, so the cell opens as text with every digit and the tab is
//!   invisible. The alternatives fail one of the two: `="6101…"` is a formula, which LibreOffice
//!   evaluates only when its import option "Evaluate formulas" is on (and formulas in exported
//!   files are what CSV-injection defenses strip), and a leading apostrophe is a typing
//!   convention that shows up as an apostrophe when it comes from a file.
//! - **Times**: China time as `2026-12-06 14:02:14` (never RFC 3339's `T` and offset); text in
//!   the XLSX.
//! - **Other text** (remarks an operator typed): a cell that starts with `=`, `+`, `-` or `@`
//!   gets a leading apostrophe in the CSV, so that it is never run as a formula.

pub use cardd_api::group::{LedgerRow, OrderRow, OrderStats, TopUpRow, TopUpStats};

use crate::model::{yuan, LedgerEntry, OrderStatus, RechargeOrder, TopUp, TopUpStatus};
use cardd_journal::CHINA_OFFSET;

/// zh-CN headers of a recharge (充值查询) row, in column order.
pub const ORDER_HEADERS: [&str; 11] = [
    "订单编号",
    "卡号",
    "充值前余额",
    "充值金额",
    "现余额",
    "充值前集团额度",
    "充值后集团额度",
    "状态",
    "操作员",
    "充值时间",
    "备注",
];

/// zh-CN headers of a top-up (额度充值查询) row, in column order.
pub const TOPUP_HEADERS: [&str; 8] = [
    "订单编号",
    "转账金额",
    "银行返回流水号",
    "备注",
    "状态",
    "操作员",
    "审核员",
    "转账时间",
];

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// An RFC 3339 time (as the rows carry it) in China time as `2026-12-06 14:02:14`; text that is
/// not such a time is kept as it is.
pub fn china_time(rfc3339: &str) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()
        .and_then(|t| t.to_offset(CHINA_OFFSET).format(&format).ok())
        .unwrap_or_else(|| rfc3339.to_owned())
}

/// One cell of an export, by what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    /// Text.
    Text(String),
    /// Digits that are an identifier, not a quantity (a card number): always text.
    Digits(String),
    /// An amount in fen; `None` when not known (an empty cell).
    Yuan(Option<i64>),
    /// A time, already `YYYY-MM-DD HH:MM:SS` China time.
    Time(String),
}

impl Cell {
    /// An amount given as the rows' yuan text (`"20.00"`, or empty when unknown).
    fn yuan(text: &str) -> Cell {
        Cell::Yuan(cardd_api::money::Fen::parse_yuan(text).ok().map(|f| f.0))
    }

    /// The cell's text as the page shows it (amounts as `20.00`).
    pub fn text(&self) -> String {
        match self {
            Cell::Text(t) | Cell::Digits(t) | Cell::Time(t) => t.clone(),
            Cell::Yuan(fen) => fen.map(yuan).unwrap_or_default(),
        }
    }

    /// The cell as written in the CSV (see the module's notes).
    fn csv(&self) -> String {
        match self {
            Cell::Digits(t) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => {
                format!("\t{t}")
            }
            Cell::Text(t) | Cell::Digits(t) if t.starts_with(['=', '+', '-', '@']) => {
                format!("'{t}")
            }
            other => other.text(),
        }
    }
}

fn opt_yuan(fen: Option<i64>) -> String {
    fen.map(yuan).unwrap_or_default()
}

/// A row that names people: their user names are kept, and the names people read (操作员,
/// 审核员 as display names) are filled in by the layer that knows the operators.
pub trait NamedRow {
    fn name_people(&mut self, name: &dyn Fn(&str) -> String);
}

impl NamedRow for OrderRow {
    fn name_people(&mut self, name: &dyn Fn(&str) -> String) {
        self.operator_name = name(&self.operator);
    }
}

impl NamedRow for TopUpRow {
    fn name_people(&mut self, name: &dyn Fn(&str) -> String) {
        self.operator_name = name(&self.operator);
        if !self.auditor.is_empty() {
            self.auditor_name = name(&self.auditor);
        }
    }
}

impl From<&RechargeOrder> for OrderRow {
    fn from(o: &RechargeOrder) -> Self {
        OrderRow {
            order_id: o.order_id.clone(),
            card_number: o.card_number.clone(),
            balance_before: opt_yuan(o.balance_before_fen),
            amount: yuan(o.amount_fen),
            balance_after: opt_yuan(o.balance_after_fen),
            quota_before: yuan(o.quota_before_fen),
            quota_after: yuan(o.quota_after_fen),
            status: o.status,
            status_label: o.status.label().into(),
            operator: o.operator.clone(),
            operator_name: o.operator.clone(),
            created_at: rfc3339(o.created_at),
            remark: o.failure.clone().unwrap_or_default(),
        }
    }
}

/// A query row as exported: its cells, under its page's headers.
pub trait ExportRow {
    /// The cells, in the order of the headers.
    fn cells(&self) -> Vec<Cell>;
}

impl ExportRow for OrderRow {
    /// The cells under [`ORDER_HEADERS`].
    fn cells(&self) -> Vec<Cell> {
        vec![
            Cell::Digits(self.order_id.clone()),
            Cell::Digits(self.card_number.clone()),
            Cell::yuan(&self.balance_before),
            Cell::yuan(&self.amount),
            Cell::yuan(&self.balance_after),
            Cell::yuan(&self.quota_before),
            Cell::yuan(&self.quota_after),
            Cell::Text(self.status_label.clone()),
            Cell::Text(self.operator_name.clone()),
            Cell::Time(china_time(&self.created_at)),
            Cell::Text(self.remark.clone()),
        ]
    }
}

impl From<&TopUp> for TopUpRow {
    fn from(t: &TopUp) -> Self {
        TopUpRow {
            topup_id: t.topup_id.clone(),
            amount: yuan(t.amount_fen),
            bank_serial: t.bank_serial.clone().unwrap_or_default(),
            remark: t.remark.clone(),
            status: t.status,
            status_label: t.status.label().into(),
            operator: t.operator.clone(),
            operator_name: t.operator.clone(),
            auditor: t.auditor.clone().unwrap_or_default(),
            auditor_name: t.auditor.clone().unwrap_or_default(),
            created_at: rfc3339(t.created_at),
        }
    }
}

impl ExportRow for TopUpRow {
    /// The cells under [`TOPUP_HEADERS`].
    fn cells(&self) -> Vec<Cell> {
        vec![
            Cell::Digits(self.topup_id.clone()),
            Cell::yuan(&self.amount),
            Cell::Digits(self.bank_serial.clone()),
            Cell::Text(self.remark.clone()),
            Cell::Text(self.status_label.clone()),
            Cell::Text(self.operator_name.clone()),
            Cell::Text(self.auditor_name.clone()),
            Cell::Time(china_time(&self.created_at)),
        ]
    }
}

impl From<&LedgerEntry> for LedgerRow {
    fn from(e: &LedgerEntry) -> Self {
        LedgerRow {
            seq: e.seq,
            at: rfc3339(e.at),
            kind: e.kind,
            kind_label: e.kind.label().into(),
            amount: yuan(e.amount_fen),
            amount_fen: e.amount_fen,
            balance_after: yuan(e.balance_after_fen),
            reference: e.reference.clone(),
            operator: e.operator.clone(),
        }
    }
}

/// The statistics of these orders.
pub fn order_stats(orders: &[RechargeOrder]) -> OrderStats {
    let sum = |f: &dyn Fn(OrderStatus) -> bool| -> (u64, i64) {
        orders
            .iter()
            .filter(|o| f(o.status))
            .fold((0, 0), |(n, a), o| (n + 1, a + o.amount_fen))
    };
    let ok = sum(&|s| s == OrderStatus::Succeeded);
    let failed = sum(&|s| matches!(s, OrderStatus::Failed | OrderStatus::Refunded));
    let refunded = sum(&|s| s == OrderStatus::Refunded);
    let open = sum(&|s| s == OrderStatus::Reserved);
    let pending = sum(&|s| s == OrderStatus::Pending);
    OrderStats {
        success_count: ok.0,
        success_amount: yuan(ok.1),
        failure_count: failed.0,
        failure_amount: yuan(failed.1),
        refunded_count: refunded.0,
        refunded_amount: yuan(refunded.1),
        in_progress_count: open.0,
        in_progress_amount: yuan(open.1),
        pending_count: pending.0,
        pending_amount: yuan(pending.1),
    }
}

/// The statistics of these top-ups.
pub fn topup_stats(topups: &[TopUp]) -> TopUpStats {
    let sum = |f: &dyn Fn(TopUpStatus) -> bool| -> (u64, i64) {
        topups
            .iter()
            .filter(|t| f(t.status))
            .fold((0, 0), |(n, a), t| (n + 1, a + t.amount_fen))
    };
    let paid = sum(&|s| s.transferred());
    let audited = sum(&|s| s == TopUpStatus::Approved);
    TopUpStats {
        transfer_success_count: paid.0,
        transfer_success_amount: yuan(paid.1),
        audited_count: audited.0,
        audited_amount: yuan(audited.1),
    }
}

/// Why an export could not be written.
#[derive(Debug, thiserror::Error)]
#[error("导出失败：{0}")]
pub struct ExportError(String);

/// The UTF-8 byte order mark, so that spreadsheet programs read the zh-CN headers right.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// CSV (RFC 4180, UTF-8 with a byte order mark): the headers, then one line per row.
pub fn to_csv(headers: &[&str], rows: &[Vec<Cell>]) -> Result<Vec<u8>, ExportError> {
    let mut writer = csv::Writer::from_writer(UTF8_BOM.to_vec());
    writer
        .write_record(headers)
        .map_err(|e| ExportError(e.to_string()))?;
    for row in rows {
        writer
            .write_record(row.iter().map(Cell::csv))
            .map_err(|e| ExportError(e.to_string()))?;
    }
    writer.into_inner().map_err(|e| ExportError(e.to_string()))
}

/// An amount in fen as the spreadsheet number of yuan. A spreadsheet number is a binary
/// double: `fen / 100` in floating point is the double nearest to the exact two-decimal value
/// (both operands are exact and IEEE division rounds correctly), the same number the program
/// would store for the typed amount, and shown exactly under the `0.00` format. Only the file
/// sees it; cardd's own arithmetic stays in integer fen.
#[allow(clippy::cast_precision_loss)]
fn spreadsheet_yuan(fen: i64) -> f64 {
    fen as f64 / 100.0
}

/// XLSX: one sheet named `sheet`, bold headers in row 1, one row per row; amounts are numbers
/// in the format `0.00`, card numbers and other identifiers text, times text as the CSV's.
pub fn to_xlsx(sheet: &str, headers: &[&str], rows: &[Vec<Cell>]) -> Result<Vec<u8>, ExportError> {
    use rust_xlsxwriter::{Format, Workbook};
    let err = |e: rust_xlsxwriter::XlsxError| ExportError(e.to_string());
    let mut workbook = Workbook::new();
    let bold = Format::new().set_bold();
    let money = Format::new().set_num_format("0.00");
    let worksheet = workbook.add_worksheet();
    worksheet.set_name(sheet).map_err(err)?;
    for (col, header) in headers.iter().enumerate() {
        let col = u16::try_from(col).map_err(|_| ExportError("列数过多".into()))?;
        worksheet
            .write_string_with_format(0, col, *header, &bold)
            .map_err(err)?;
        worksheet.set_column_width(col, 20).map_err(err)?;
    }
    for (r, row) in rows.iter().enumerate() {
        let r = u32::try_from(r + 1).map_err(|_| ExportError("行数过多".into()))?;
        for (col, cell) in row.iter().enumerate() {
            let col = u16::try_from(col).map_err(|_| ExportError("列数过多".into()))?;
            match cell {
                Cell::Yuan(Some(fen)) => {
                    worksheet
                        .write_number_with_format(r, col, spreadsheet_yuan(*fen), &money)
                        .map_err(err)?;
                }
                Cell::Yuan(None) => {}
                Cell::Text(t) | Cell::Digits(t) | Cell::Time(t) => {
                    worksheet.write_string(r, col, t).map_err(err)?;
                }
            }
        }
    }
    workbook.save_to_buffer().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_has_a_bom_the_headers_and_exactly_the_rows() {
        let rows = vec![
            vec![Cell::Text("a".to_owned()), Cell::Text("1,5".to_owned())],
            vec![Cell::Text("b".to_owned()), Cell::Text("\"q\"".to_owned())],
        ];
        let bytes = to_csv(&["订单编号", "金额"], &rows).unwrap();
        assert!(bytes.starts_with(UTF8_BOM));
        let text = String::from_utf8(bytes[3..].to_vec()).unwrap();
        assert_eq!(text, "订单编号,金额\na,\"1,5\"\nb,\"\"\"q\"\"\"\n");
    }

    #[test]
    fn csv_keeps_card_numbers_text_amounts_exact_and_formulas_inert() {
        let rows = vec![vec![
            Cell::Digits("61010000000000000012".to_owned()),
            Cell::yuan("20.05"),
            Cell::Yuan(None),
            Cell::Time(china_time("2026-12-06T06:02:14Z")),
            Cell::Text("=HYPERLINK(\"x\")".to_owned()),
            Cell::Digits("GO1".to_owned()),
        ]];
        let bytes = to_csv(
            &["卡号", "金额", "现余额", "时间", "备注", "订单编号"],
            &rows,
        )
        .unwrap();
        let text = String::from_utf8(bytes[3..].to_vec()).unwrap();
        let line = text.lines().nth(1).unwrap();
        assert_eq!(
            line,
            "\t61010000000000000012,20.05,,2026-12-06 14:02:14,\"'=HYPERLINK(\"\"x\"\")\",GO1"
        );
    }

    #[test]
    fn times_are_china_time_without_the_iso_letters() {
        assert_eq!(
            china_time("2026-12-06T14:02:14+08:00"),
            "2026-12-06 14:02:14"
        );
        assert_eq!(china_time("2026-12-06T18:00:00Z"), "2026-12-07 02:00:00");
        assert_eq!(china_time(""), "");
    }

    #[test]
    fn xlsx_is_a_zip_workbook() {
        let bytes = to_xlsx("充值查询", &["订单编号"], &[vec![Cell::Text("GO1".into())]]).unwrap();
        assert!(bytes.starts_with(b"PK"), "an xlsx file is a zip archive");
    }
}
